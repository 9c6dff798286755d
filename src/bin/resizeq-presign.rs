//! `resizeq-presign`: the upload sidecar. Builds without the image codecs:
//! `cargo build --no-default-features --bin resizeq-presign`.

fn main() -> std::process::ExitCode {
    eprintln!("resizeq-presign: not implemented yet (see the presign issue)");
    std::process::ExitCode::FAILURE
}
