//! `resizeq-presign` end to end through real HTTP: the sidecar's router on 127.0.0.1, a
//! strict S3 (`s3s-fs`, in-process, SigV4 enforced) behind it, and uploads made exactly as a
//! browser makes them (multipart/form-data POST with the returned fields then the file; PUT
//! with the returned headers). Moto is not used here: it checks no signature, expiry or policy.

use crate::common::jwt_keys;
use crate::common::s3s as strict_s3;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use resizeq::adapters::presign_s3::SdkUploadSigner;
use resizeq::presign::{self, config::SidecarConfig};
use serde_json::{json, Value};
use strict_s3::StrictS3;

const BUCKET: &str = "incoming";
const SECRET: &str = "hs256-secret-for-the-presign-tests-0123456789";
const ISSUER: &str = "https://id.example.test";
/// A real photo-like JPEG with EXIF (5518 bytes).
const JPEG: &[u8] = include_bytes!("../fixtures/meta.jpg");
/// A smaller real JPEG (984 bytes).
const SMALL_JPEG: &[u8] = include_bytes!("../fixtures/progressive.jpg");

struct Sidecar {
    s3: StrictS3,
    base: String,
    http: reqwest::Client,
    _config_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<resizeq::Result<()>>>,
}

impl Sidecar {
    /// A sidecar whose config file is the strict S3's `[aws]`, `[presign]` with `bucket` and
    /// `presign_keys`, then `sections` (further tables); `[presign.auth.jwt]` is the HS256
    /// secret and issuer unless `sections` has its own.
    async fn start(presign_keys: &str, sections: &str) -> Sidecar {
        let s3 = StrictS3::start(BUCKET).await;
        let endpoint = s3.endpoint.clone();
        Sidecar::start_on(s3, &endpoint, presign_keys, sections).await
    }

    /// As [`Sidecar::start`] on a running strict S3, with `endpoint` as `aws.endpoint_url`
    /// (what the issued URLs point at).
    async fn start_on(s3: StrictS3, endpoint: &str, presign_keys: &str, sections: &str) -> Sidecar {
        let jwt = if sections.contains("[presign.auth.jwt]") {
            String::new()
        } else {
            format!("[presign.auth.jwt]\nhs256_secret = \"{SECRET}\"\nissuer = \"{ISSUER}\"\n")
        };
        let text = format!(
            "[aws]\nregion = \"{}\"\nendpoint_url = \"{}\"\nforce_path_style = true\n\
             [presign]\nlisten = \"127.0.0.1:0\"\nbucket = \"{BUCKET}\"\n{presign_keys}\n\
             {jwt}{sections}\n",
            strict_s3::REGION,
            endpoint
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resizeq.toml");
        std::fs::write(&path, text).unwrap();
        let config = SidecarConfig::load_from(Some(&path), Vec::new()).unwrap();
        let signer = SdkUploadSigner::shared(&s3.sdk, &config.aws).unwrap();
        let app = presign::build(&config, signer).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(presign::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Sidecar {
            s3,
            base,
            http: reqwest::Client::new(),
            _config_dir: dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn issue_with(&self, authorization: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/uploads", self.base))
            .json(&body);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        request.send().await.unwrap()
    }

    /// Issues with a valid token for `alice` and expects 201.
    async fn issue(&self, body: Value) -> Value {
        let response = self
            .issue_with(Some(&bearer(&token_for("alice", "upload"))), body)
            .await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Polls `/readyz` until it answers 200 (the JWKS URL is fetched in the background).
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.get("/readyz").await;
            if r.status() == StatusCode::OK {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready after 15 s: {}",
                r.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// Stops the server through its shutdown parameter and waits for it to return.
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), self.server.take().unwrap())
            .await
            .expect("the server stops after its shutdown signal");
        result.unwrap().unwrap();
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn now_secs() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "exp": now_secs() + 300, "scope": scope})
}

fn token_for(sub: &str, scope: &str) -> String {
    hs256(&claims(sub, scope), SECRET)
}

fn upload_request(method: &str, content_type: &str, length: usize) -> Value {
    json!({"method": method, "content_type": content_type, "content_length": length})
}

fn fields_of(issued: &Value) -> Vec<(String, String)> {
    issued["fields"]
        .as_object()
        .expect("a POST answer has fields")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn set_field(fields: &mut [(String, String)], name: &str, value: &str) {
    let field = fields
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no field {name}"));
    field.1 = value.to_string();
}

/// Flips the last hex digit of a signature.
fn tamper(signature: &str) -> String {
    let mut s = signature.to_string();
    let last = s.pop().unwrap();
    s.push(if last == '0' { '1' } else { '0' });
    s
}

/// A browser's form upload: every returned field, then the file part last.
async fn post_form(
    url: &str,
    fields: &[(String, String)],
    file: &[u8],
    file_type: &str,
) -> (StatusCode, String) {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.clone(), v.clone());
    }
    let part = reqwest::multipart::Part::bytes(file.to_vec())
        .file_name("photo.jpg")
        .mime_str(file_type)
        .unwrap();
    form = form.part("file", part);
    let response = reqwest::Client::new()
        .post(url)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The returned headers as a browser sends them: Content-Length is not settable from
/// script; the browser derives it from the body, and so does this client.
fn put_headers(issued: &Value) -> Vec<(String, String)> {
    issued["headers"]
        .as_object()
        .expect("a PUT answer has headers")
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

async fn put_body(url: &str, headers: &[(String, String)], body: &[u8]) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().put(url).body(body.to_vec());
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn assert_s3_error(what: &str, (status, body): &(StatusCode, String), code: &str) {
    assert!(
        status.is_client_error(),
        "{what}: S3 accepted it ({status}): {body}"
    );
    assert!(
        body.contains(&format!("<Code>{code}</Code>")),
        "{what}: expected {code}, got {status}: {body}"
    );
}

fn url_query_param(url: &str, name: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in the URL"))
}

fn replace_query_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// Sends `request` as raw bytes on a new connection (written whole) and reads the answer
/// until the server closes: (status, body). For what reqwest will not send (chunked bodies).
async fn raw_exchange(base: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    // The server may answer (413) and close before reading everything: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .ok();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn seconds_until(rfc3339: &str) -> f64 {
    let at = humantime::parse_rfc3339(rfc3339).unwrap();
    match at.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[tokio::test]
async fn an_issued_post_uploads_a_real_jpeg_to_the_issued_key_with_uploader_metadata() {
    let sidecar = Sidecar::start("", "").await;
    let mut request = upload_request("POST", "image/jpeg", JPEG.len());
    request["filename"] = json!("../holiday/IMG 0001.JPG");
    // Without `method`, POST is the default.
    request.as_object_mut().unwrap().remove("method");
    let issued = sidecar.issue(request).await;

    assert_eq!(issued["method"], "POST");
    let key = issued["key"].as_str().unwrap();
    assert!(
        key.starts_with("uploads/alice/") && key.ends_with(".jpg"),
        "{key}"
    );
    assert_eq!(issued["filename"], "IMG 0001.JPG");
    assert_eq!(issued["max_bytes"], 20 * 1024 * 1024);
    assert!(issued.get("headers").is_none());
    let remaining = seconds_until(issued["expires_at"].as_str().unwrap());
    assert!((290.0..=301.0).contains(&remaining), "{remaining}");
    assert_eq!(
        issued["url"].as_str().unwrap(),
        format!("{}/{BUCKET}", sidecar.s3.endpoint)
    );
    let fields = fields_of(&issued);
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).unwrap().1.clone();
    assert_eq!(field("key"), key);
    assert_eq!(field("Content-Type"), "image/jpeg");
    assert_eq!(field("x-amz-meta-uploader"), "alice");

    let result = post_form(issued["url"].as_str().unwrap(), &fields, JPEG, "image/jpeg").await;
    assert_eq!(result.0, StatusCode::NO_CONTENT, "{}", result.1);
    let (bytes, metadata, content_type) = sidecar.s3.object(BUCKET, key).await.unwrap();
    assert_eq!(bytes, JPEG);
    assert_eq!(metadata.get("uploader").map(String::as_str), Some("alice"));
    assert_eq!(content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(sidecar.s3.object_count(BUCKET).await, 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn an_issued_put_uploads_a_real_jpeg_to_the_issued_key_with_uploader_metadata() {
    let sidecar = Sidecar::start("", "").await;
    let issued = sidecar
        .issue(upload_request("PUT", "image/jpeg", JPEG.len()))
        .await;
    assert_eq!(issued["method"], "PUT");
    assert!(issued.get("fields").is_none());
    assert_eq!(issued["max_bytes"], JPEG.len());
    let key = issued["key"].as_str().unwrap();
    assert!(
        key.starts_with("uploads/alice/") && key.ends_with(".jpg"),
        "{key}"
    );
    let url = issued["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/{BUCKET}/{key}?", sidecar.s3.endpoint)),
        "{url}"
    );
    // Type, length and uploader are signed: S3 refuses a request without them as given.
    let signed = url_query_param(url, "X-Amz-SignedHeaders");
    for header in ["content-length", "content-type", "x-amz-meta-uploader"] {
        assert!(signed.split(';').any(|h| h == header), "{signed}");
    }
    let headers = issued["headers"].as_object().unwrap();
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(headers["content-length"], JPEG.len().to_string());
    assert_eq!(headers["x-amz-meta-uploader"], "alice");

    let result = put_body(url, &put_headers(&issued), JPEG).await;
    assert_eq!(result.0, StatusCode::OK, "{}", result.1);
    let (bytes, metadata, content_type) = sidecar.s3.object(BUCKET, key).await.unwrap();
    assert_eq!(bytes, JPEG);
    assert_eq!(metadata.get("uploader").map(String::as_str), Some("alice"));
    assert_eq!(content_type.as_deref(), Some("image/jpeg"));
    sidecar.stop().await;
}

#[tokio::test]
async fn s3_rejects_a_post_that_strays_from_its_policy() {
    // max_bytes under the big JPEG and over the small one.
    let sidecar = Sidecar::start("max_bytes = 2000", "").await;
    let issued = sidecar
        .issue(upload_request("POST", "image/jpeg", SMALL_JPEG.len()))
        .await;
    let url = issued["url"].as_str().unwrap();
    let fields = fields_of(&issued);
    let key = issued["key"].as_str().unwrap().to_string();

    // A body over the limit (the declared size is not what S3 checks: the policy's range is).
    let r = post_form(url, &fields, JPEG, "image/jpeg").await;
    assert_s3_error("body over the limit", &r, "EntityTooLarge");

    let mut other_type = fields.clone();
    set_field(&mut other_type, "Content-Type", "image/png");
    let r = post_form(url, &other_type, SMALL_JPEG, "image/png").await;
    assert_s3_error("different Content-Type", &r, "InvalidPolicyDocument");

    for changed in [
        "uploads/alice/chosen-by-client.jpg",
        "uploads/bob/x.jpg",
        "index.html",
    ] {
        let mut other_key = fields.clone();
        set_field(&mut other_key, "key", changed);
        let r = post_form(url, &other_key, SMALL_JPEG, "image/jpeg").await;
        assert_s3_error("changed key", &r, "InvalidPolicyDocument");
    }

    let mut other_uploader = fields.clone();
    set_field(&mut other_uploader, "x-amz-meta-uploader", "bob");
    let r = post_form(url, &other_uploader, SMALL_JPEG, "image/jpeg").await;
    assert_s3_error("changed uploader", &r, "InvalidPolicyDocument");

    let mut extra_field = fields.clone();
    extra_field.push(("x-amz-meta-extra".into(), "x".into()));
    let r = post_form(url, &extra_field, SMALL_JPEG, "image/jpeg").await;
    assert_s3_error("field outside the policy", &r, "AccessDenied");

    let mut tampered = fields.clone();
    let signature = tampered
        .iter()
        .find(|(k, _)| k == "x-amz-signature")
        .unwrap()
        .1
        .clone();
    set_field(&mut tampered, "x-amz-signature", &tamper(&signature));
    let r = post_form(url, &tampered, SMALL_JPEG, "image/jpeg").await;
    assert_s3_error("tampered signature", &r, "SignatureDoesNotMatch");

    assert_eq!(sidecar.s3.object_count(BUCKET).await, 0, "nothing landed");
    // The untouched form works, so each refusal above came from its one change.
    let r = post_form(url, &fields, SMALL_JPEG, "image/jpeg").await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    assert_eq!(sidecar.s3.object(BUCKET, &key).await.unwrap().0, SMALL_JPEG);
    sidecar.stop().await;
}

#[tokio::test]
async fn s3_rejects_a_put_that_differs_from_what_was_signed() {
    let sidecar = Sidecar::start("", "").await;
    let issued = sidecar
        .issue(upload_request("PUT", "image/jpeg", JPEG.len()))
        .await;
    let url = issued["url"].as_str().unwrap();
    let headers = put_headers(&issued);
    let key = issued["key"].as_str().unwrap().to_string();

    let mut bigger = JPEG.to_vec();
    bigger.extend_from_slice(&[0u8; 1000]);
    let r = put_body(url, &headers, &bigger).await;
    assert_s3_error("body over the signed length", &r, "SignatureDoesNotMatch");

    let mut other_type = headers.clone();
    set_field(&mut other_type, "content-type", "text/html");
    let r = put_body(url, &other_type, JPEG).await;
    assert_s3_error("different Content-Type", &r, "SignatureDoesNotMatch");

    let without_uploader: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != "x-amz-meta-uploader")
        .cloned()
        .collect();
    let r = put_body(url, &without_uploader, JPEG).await;
    assert_s3_error("uploader header left out", &r, "SignatureDoesNotMatch");

    let other_key_url = url.replace(&key, "uploads/alice/chosen-by-client.jpg");
    assert_ne!(other_key_url, url);
    let r = put_body(&other_key_url, &headers, JPEG).await;
    assert_s3_error("changed key", &r, "SignatureDoesNotMatch");

    let signature = url_query_param(url, "X-Amz-Signature");
    let tampered = replace_query_param(url, "X-Amz-Signature", &tamper(&signature));
    let r = put_body(&tampered, &headers, JPEG).await;
    assert_s3_error("tampered signature", &r, "SignatureDoesNotMatch");

    assert_eq!(sidecar.s3.object_count(BUCKET).await, 0, "nothing landed");
    let r = put_body(url, &headers, JPEG).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    sidecar.stop().await;
}

#[tokio::test]
async fn expired_urls_are_rejected_by_s3_and_expiry_is_capped() {
    let sidecar = Sidecar::start("max_expires_secs = 600", "").await;
    let mut post = upload_request("POST", "image/jpeg", JPEG.len());
    post["expires_secs"] = json!(1);
    let post = sidecar.issue(post).await;
    let mut put = upload_request("PUT", "image/jpeg", JPEG.len());
    put["expires_secs"] = json!(1);
    let put = sidecar.issue(put).await;
    assert_eq!(
        url_query_param(put["url"].as_str().unwrap(), "X-Amz-Expires"),
        "1"
    );
    assert!(seconds_until(post["expires_at"].as_str().unwrap()) <= 1.0);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = post_form(
        post["url"].as_str().unwrap(),
        &fields_of(&post),
        JPEG,
        "image/jpeg",
    )
    .await;
    assert_s3_error("expired POST", &r, "AccessDenied");
    assert!(r.1.contains("expired"), "{}", r.1);
    let r = put_body(put["url"].as_str().unwrap(), &put_headers(&put), JPEG).await;
    assert_s3_error("expired PUT", &r, "AccessDenied");
    assert!(r.1.contains("expired"), "{}", r.1);
    assert_eq!(sidecar.s3.object_count(BUCKET).await, 0);

    // Asking for more than the cap gets the cap.
    let mut long = upload_request("PUT", "image/jpeg", JPEG.len());
    long["expires_secs"] = json!(7 * 24 * 3600);
    let long = sidecar.issue(long).await;
    assert_eq!(
        url_query_param(long["url"].as_str().unwrap(), "X-Amz-Expires"),
        "600"
    );
    sidecar.stop().await;
}

async fn assert_401(sidecar: &Sidecar, what: &str, authorization: Option<&str>) {
    let response = sidecar
        .issue_with(authorization, upload_request("POST", "image/jpeg", 100))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated", "{what}: {body}");
}

#[tokio::test]
async fn requests_without_a_valid_credential_get_401() {
    let sidecar = Sidecar::start(
        "",
        "[[presign.auth.api_keys]]\nname = \"kiosk\"\n\
         sha256 = \"9a1a6c4e0f3bb7a5b8f0df6b0b3f3d6a5c9e0e5b2d8f8f6c2b5a4e3d2c1b0a99\"\n",
    )
    .await;
    assert_401(&sidecar, "no token", None).await;
    assert_401(&sidecar, "not a bearer", Some("Basic YWxpY2U6cHc=")).await;
    assert_401(&sidecar, "garbage", Some("Bearer a.b.c")).await;
    let mut expired = claims("alice", "upload");
    expired["exp"] = json!(now_secs() - 120); // beyond the 30 s leeway
    assert_401(
        &sidecar,
        "expired token",
        Some(&bearer(&hs256(&expired, SECRET))),
    )
    .await;
    let mut wrong_issuer = claims("alice", "upload");
    wrong_issuer["iss"] = json!("https://evil.example");
    assert_401(
        &sidecar,
        "wrong issuer",
        Some(&bearer(&hs256(&wrong_issuer, SECRET))),
    )
    .await;
    let other_secret = "another-secret-of-at-least-32-bytes-000000";
    assert_401(
        &sidecar,
        "token signed with another key",
        Some(&bearer(&hs256(&claims("alice", "upload"), other_secret))),
    )
    .await;
    assert_401(
        &sidecar,
        "unknown API key",
        Some("Bearer not-the-kiosk-key"),
    )
    .await;

    // The same request with a valid token passes, so the refusals are about the credential.
    let ok = sidecar
        .issue_with(
            Some(&bearer(&token_for("alice", "upload"))),
            upload_request("POST", "image/jpeg", 100),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_valid_credential_without_the_upload_scope_gets_403_and_api_keys_name_the_caller() {
    use sha2::Digest;
    let upload_key = "rq_live_upload_key_0001";
    let read_key = "rq_live_read_key_0002";
    let sections = format!(
        "[[presign.auth.api_keys]]\nname = \"kiosk\"\nsha256 = \"{}\"\n\
         [[presign.auth.api_keys]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n",
        hex::encode(sha2::Sha256::digest(upload_key)),
        hex::encode(sha2::Sha256::digest(read_key)),
    );
    let sidecar = Sidecar::start("", &sections).await;
    for (what, auth) in [
        (
            "JWT without the scope",
            bearer(&token_for("alice", "openid profile")),
        ),
        ("API key without the scope", bearer(read_key)),
    ] {
        let response = sidecar
            .issue_with(Some(&auth), upload_request("POST", "image/jpeg", 100))
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "forbidden", "{what}");
    }
    let response = sidecar
        .issue_with(
            Some(&bearer(upload_key)),
            upload_request("PUT", "image/jpeg", JPEG.len()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    // API keys have their own namespace, `key~NAME`, which no JWT subject escapes to.
    assert!(issued["key"]
        .as_str()
        .unwrap()
        .starts_with("uploads/key~kiosk/"));
    assert_eq!(issued["headers"]["x-amz-meta-uploader"], "key~kiosk");
    let r = put_body(issued["url"].as_str().unwrap(), &put_headers(&issued), JPEG).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    for (sub, prefix) in [
        ("kiosk", "uploads/kiosk/"),
        ("key~kiosk", "uploads/key.7Ekiosk/"),
    ] {
        let response = sidecar
            .issue_with(
                Some(&bearer(&token_for(sub, "upload"))),
                upload_request("POST", "image/jpeg", 100),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let issued: Value = response.json().await.unwrap();
        let key = issued["key"].as_str().unwrap();
        assert!(key.starts_with(prefix), "sub {sub}: {key}");
    }
    sidecar.stop().await;
}

fn es256_token(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn jwks(pem: &str, alg: Algorithm, kid: &str) -> Value {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    };
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    json!({"keys": [jwk]})
}

#[tokio::test]
async fn es256_keys_from_a_jwks_file_are_accepted_and_foreign_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let set = jwks(jwt_keys::ES256_PRIVATE_PEM, Algorithm::ES256, "es-1");
    std::fs::write(&jwks_path, set.to_string()).unwrap();
    let sidecar = Sidecar::start(
        "",
        &format!(
            "[presign.auth.jwt]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\n\
             audience = \"uploads-api\"\n",
            jwks_path.display()
        ),
    )
    .await;
    let mut good = claims("carol", "upload");
    good["aud"] = json!("uploads-api");
    let response = sidecar
        .issue_with(
            Some(&bearer(&es256_token(
                jwt_keys::ES256_PRIVATE_PEM,
                "es-1",
                &good,
            ))),
            upload_request("POST", "image/png", 100),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    assert!(issued["key"]
        .as_str()
        .unwrap()
        .starts_with("uploads/carol/"));
    assert!(issued["key"].as_str().unwrap().ends_with(".png"));

    let foreign = es256_token(jwt_keys::ES256_OTHER_PRIVATE_PEM, "es-1", &good);
    assert_401(
        &sidecar,
        "ES256 token signed with another key",
        Some(&bearer(&foreign)),
    )
    .await;
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = json!("another-api");
    let token = es256_token(jwt_keys::ES256_PRIVATE_PEM, "es-1", &wrong_audience);
    assert_401(&sidecar, "wrong audience", Some(&bearer(&token))).await;
    // No HS256 secret is configured here: HS256 tokens are refused whatever they say.
    assert_401(
        &sidecar,
        "HS256 without a secret",
        Some(&bearer(&hs256(&good, SECRET))),
    )
    .await;
    sidecar.stop().await;
}

const AUDIENCE: &str = "uploads-api";

/// `[presign.auth.jwt]` for a loopback (http) JWKS URL with issuer and audience, plus `extra`.
fn jwks_url_section(jwks_url: &str, extra: &str) -> String {
    format!(
        "[presign.auth.jwt]\njwks_url = \"{jwks_url}\"\nallow_insecure_jwks_url = true\n\
         issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{extra}\n"
    )
}

fn aud_claims(sub: &str) -> Value {
    let mut c = claims(sub, "upload");
    c["aud"] = json!(AUDIENCE);
    c
}

fn rs256_token(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(jwt_keys::RS256_PRIVATE_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn rs256_keys_from_a_jwks_url_are_accepted() {
    let set = jwks(jwt_keys::RS256_PRIVATE_PEM, Algorithm::RS256, "rs-1");
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let jwks_server = tokio::spawn(async move { axum::serve(listener, app).await });
    let sidecar = Sidecar::start("", &jwks_url_section(&jwks_url, "")).await;
    sidecar.wait_ready().await;

    let token = rs256_token("rs-1", &aud_claims("dave"));
    let response = sidecar
        .issue_with(
            Some(&bearer(&token)),
            upload_request("PUT", "image/webp", 100),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    assert!(issued["key"].as_str().unwrap().starts_with("uploads/dave/"));
    let token = rs256_token("rs-unknown", &aud_claims("dave"));
    assert_401(&sidecar, "unknown kid", Some(&bearer(&token))).await;
    // Issuer and audience are required with a JWKS, so a token the same identity provider
    // minted for another API, or another issuer's, is refused.
    let mut other_api = aud_claims("dave");
    other_api["aud"] = json!("other");
    assert_401(
        &sidecar,
        "audience of another API",
        Some(&bearer(&rs256_token("rs-1", &other_api))),
    )
    .await;
    let mut evil = aud_claims("dave");
    evil["iss"] = json!("https://evil/");
    assert_401(
        &sidecar,
        "another issuer",
        Some(&bearer(&rs256_token("rs-1", &evil))),
    )
    .await;
    let mut no_aud = aud_claims("dave");
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_401(
        &sidecar,
        "no audience",
        Some(&bearer(&rs256_token("rs-1", &no_aud))),
    )
    .await;
    sidecar.stop().await;
    jwks_server.abort();
}

#[tokio::test]
async fn a_disallowed_type_or_size_is_400_with_a_clear_message() {
    let sidecar = Sidecar::start("", "").await;
    let token = bearer(&token_for("alice", "upload"));
    let cases = [
        (
            upload_request("POST", "text/html", 100),
            "content_type",
            "content_type `text/html` is not allowed; allowed: image/jpeg, image/png",
        ),
        (
            upload_request("PUT", "image/jpeg", 20 * 1024 * 1024 + 1),
            "too_large",
            "content_length 20971521 is over the limit of 20971520 bytes",
        ),
        (
            upload_request("POST", "image/jpeg", 0),
            "too_large",
            "content_length must be at least 1",
        ),
        (
            json!({"content_type": "image/jpeg", "content_length": 10, "key": "mine.jpg"}),
            "invalid_request",
            "unknown field `key`",
        ),
        (
            json!({"content_type": "image/jpeg"}),
            "invalid_request",
            "missing field `content_length`",
        ),
        (
            upload_request("DELETE", "image/jpeg", 10),
            "invalid_request",
            "unknown variant `DELETE`",
        ),
    ];
    for (body, error, message) in cases {
        let response = sidecar.issue_with(Some(&token), body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], error, "{body}: {answer}");
        let text = answer["message"].as_str().unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }
    // Too big to be an upload request at all: refused before it is read.
    let huge = json!({"content_type": "image/jpeg", "content_length": 10,
        "filename": "x".repeat(20_000)});
    let response = sidecar.issue_with(Some(&token), huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "body_too_large", "{answer}");
    // Chunked (no Content-Length): the same JSON 413, not a 400 or a plain-text one.
    let body = format!(
        r#"{{"content_type":"image/jpeg","content_length":10,"filename":"{}"}}"#,
        "x".repeat(20_000)
    );
    let mut chunked = format!(
        "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(4096) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let (status, answer) = raw_exchange(&sidecar.base, chunked.as_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["error"], "body_too_large", "{answer}");
    // Unknown routes and methods answer JSON too.
    let r = sidecar.get("/nowhere").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = sidecar.get("/v1/uploads").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_and_recovers() {
    let sidecar = Sidecar::start("", "[presign.rate_limit]\nper_minute = 12\nburst = 2\n").await;
    let alice = bearer(&token_for("alice", "upload"));
    let bob = bearer(&token_for("bob", "upload"));
    let request = || upload_request("POST", "image/jpeg", 100);
    for _ in 0..2 {
        let r = sidecar.issue_with(Some(&alice), request()).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let limited = sidecar.issue_with(Some(&alice), request()).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One request every 5 s once the burst is spent (a slow machine may have used some of it).
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // Per caller: bob is not held back by alice.
    let r = sidecar.issue_with(Some(&bob), request()).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let r = sidecar.issue_with(Some(&alice), request()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "recovered after Retry-After"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn the_compat_route_is_off_by_default() {
    let sidecar = Sidecar::start("", "").await;
    let response = sidecar
        .http
        .get(format!("{}/image/presigned-uri", sidecar.base))
        .header("authorization", bearer(&token_for("alice", "upload")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    sidecar.stop().await;
}

#[tokio::test]
async fn the_compat_route_answers_in_the_old_shape_with_a_url_that_works() {
    // Unbounded, as an operator with old clients that cannot send a size must say explicitly.
    let sidecar = Sidecar::start("compat_route = true\ncompat_unbounded = true", "").await;
    let url = format!("{}/image/presigned-uri", sidecar.base);
    let unauthenticated = sidecar.http.get(&url).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    let response = sidecar
        .http
        .get(&url)
        .header("authorization", bearer(&token_for("alice", "upload")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 2, "{body}");
    assert_eq!(body["result"], "SUCCESS");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let presigned = data[0].as_str().unwrap();
    // 300 s, not the old 100 hours.
    assert_eq!(url_query_param(presigned, "X-Amz-Expires"), "300");
    let prefix = format!("{}/{BUCKET}/uploads/alice/", sidecar.s3.endpoint);
    assert!(presigned.starts_with(&prefix), "{presigned}");
    let key = reqwest::Url::parse(presigned).unwrap().path()[BUCKET.len() + 2..].to_string();

    // An old client: a plain PUT with the image's type.
    let headers = [("content-type".to_string(), "image/jpeg".to_string())];
    let wrong = [("content-type".to_string(), "text/html".to_string())];
    let r = put_body(presigned, &wrong, JPEG).await;
    assert_s3_error("compat URL with another type", &r, "SignatureDoesNotMatch");
    let r = put_body(presigned, &headers, JPEG).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(sidecar.s3.object(BUCKET, &key).await.unwrap().0, JPEG);

    // With ?content_length= the length is signed too.
    let response = sidecar
        .http
        .get(format!("{url}?content_type=image/png&content_length=5"))
        .header("authorization", bearer(&token_for("alice", "upload")))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let presigned = body["data"][0].as_str().unwrap();
    assert!(url_query_param(presigned, "X-Amz-SignedHeaders").contains("content-length"));
    let png = [("content-type".to_string(), "image/png".to_string())];
    let r = put_body(presigned, &png, JPEG).await;
    assert_s3_error(
        "compat URL over its signed length",
        &r,
        "SignatureDoesNotMatch",
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_cors() {
    let sidecar = Sidecar::start(
        "",
        "[presign.cors]\nallowed_origins = [\"https://app.example.test\"]\n",
    )
    .await;
    let get = |path: &str| sidecar.http.get(format!("{}{path}", sidecar.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    sidecar.issue(upload_request("PUT", "image/gif", 10)).await;
    let refused = sidecar
        .issue_with(None, upload_request("PUT", "image/gif", 10))
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        "resizeq_presign_urls_issued_total{method=\"PUT\",content_type=\"image/gif\"}",
        "resizeq_presign_rejections_total{reason=\"unauthenticated\"}",
        "resizeq_presign_request_duration_seconds_bucket{route=\"/v1/uploads\",status=\"201\",le=\"0.005\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    let preflight = |origin: &'static str| {
        sidecar
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/uploads", sidecar.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.test").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.test"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    sidecar.stop().await;
}

/// The binary as deployed: JSON logs on stderr, a SIGTERM stops it cleanly, and no token or
/// signature ever appears in the logs.
#[tokio::test]
async fn the_binary_logs_no_token_or_signature_and_exits_0_on_sigterm() {
    let s3 = StrictS3::start(BUCKET).await;
    let workdir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_resizeq-presign"));
    command
        .current_dir(workdir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RESIZEQ_PRESIGN__LISTEN", "127.0.0.1:0")
        .env("RESIZEQ_PRESIGN__BUCKET", BUCKET)
        .env("RESIZEQ_PRESIGN__AUTH__JWT__HS256_SECRET", SECRET)
        .env("RESIZEQ_AWS__REGION", strict_s3::REGION)
        .env("RESIZEQ_AWS__ENDPOINT_URL", &s3.endpoint)
        .env("RESIZEQ_AWS__FORCE_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", strict_s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", strict_s3::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let listen = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the sidecar logs that it listens");
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        log.push(line);
        if event["message"] == "resizeq-presign listening" {
            break event["listen"].as_str().unwrap().to_string();
        }
    };
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let token = token_for("erin", "upload");
    let mut signatures = Vec::new();
    for method in ["POST", "PUT"] {
        let response = http
            .post(format!("{base}/v1/uploads"))
            .header("authorization", bearer(&token))
            .json(&upload_request(method, "image/jpeg", JPEG.len()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let issued: Value = response.json().await.unwrap();
        signatures.push(match method {
            "POST" => {
                fields_of(&issued)
                    .into_iter()
                    .find(|(k, _)| k == "x-amz-signature")
                    .unwrap()
                    .1
            }
            _ => url_query_param(issued["url"].as_str().unwrap(), "X-Amz-Signature"),
        });
        if method == "PUT" {
            let r = put_body(issued["url"].as_str().unwrap(), &put_headers(&issued), JPEG).await;
            assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        }
    }
    let refused = http
        .post(format!("{base}/v1/uploads"))
        .header(
            "authorization",
            bearer(&hs256(&claims("erin", "upload"), "x".repeat(40).as_str())),
        )
        .json(&upload_request("POST", "image/jpeg", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    reader.join().unwrap();
    log.extend(lines_rx.try_iter());
    let all = log.join("\n");
    assert!(exit.success(), "exit {exit:?}:\n{all}");
    assert!(all.contains("\"signal\":\"SIGTERM\""), "{all}");
    assert_eq!(all.matches("upload URL issued").count(), 2, "{all}");
    assert!(all.contains("uploads/erin/"), "the key is logged: {all}");
    let refused = log
        .iter()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{all}"));
    // The client's address, and one `message` key (the reason's detail is `detail`).
    assert!(refused.contains("\"client\":\"127.0.0.1\""), "{refused}");
    assert_eq!(refused.matches("\"message\":").count(), 1, "{refused}");
    assert!(
        refused.contains("\"reason\":\"unauthenticated\""),
        "{refused}"
    );
    assert!(
        !all.contains(&token),
        "a token leaked into the logs:\n{all}"
    );
    for signature in &signatures {
        assert!(
            !all.contains(signature.as_str()),
            "a signature leaked:\n{all}"
        );
    }
    assert!(
        !all.contains("X-Amz-Signature") && !all.contains(strict_s3::SECRET_KEY),
        "{all}"
    );
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn issue_from(
    http: &reqwest::Client,
    base: &str,
    authorization: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{base}/v1/uploads"))
        .header("authorization", authorization)
        .json(&upload_request("POST", "image/jpeg", 100));
    if let Some(f) = forwarded_for {
        request = request.header("x-forwarded-for", f);
    }
    request.send().await.unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_bad_credentials_meets_429_from_its_address_while_others_are_served() {
    let sidecar = Sidecar::start(
        "",
        "[presign.client_limit]\nauth_failures_per_minute = 2\nauth_failures_burst = 3\n\
         [[presign.auth.api_keys]]\nname = \"kiosk\"\n\
         sha256 = \"9a1a6c4e0f3bb7a5b8f0df6b0b3f3d6a5c9e0e5b2d8f8f6c2b5a4e3d2c1b0a99\"\n",
    )
    .await;
    let attacker = client_from("127.0.0.2");
    let bad = [
        bearer(&hs256(&claims("alice", "upload"), &"x".repeat(40))),
        bearer("not-the-kiosk-key"),
        bearer("a.b.c"),
    ];
    // (status, Retry-After, error) of each answer.
    let mut answers = Vec::new();
    for i in 0..30 {
        let r = issue_from(&attacker, &sidecar.base, &bad[i % bad.len()], None).await;
        let status = r.status().as_u16();
        let wait = r.headers().get("retry-after").map(|_| retry_after(&r));
        let body: Value = r.json().await.unwrap();
        answers.push((status, wait, body["error"].as_str().unwrap().to_string()));
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    // The burst of 3, the attempt that finds it spent (and one more if a token was regained
    // while the loop ran), then 429 only, each with a Retry-After.
    assert!((4..=5).contains(&unauthorized), "{statuses:?}");
    for (status, wait, error) in &answers[unauthorized..] {
        assert_eq!(*status, 429, "{statuses:?}");
        assert_eq!(error, "rate_limited");
        assert!(
            wait.is_some_and(|w| (1..=30).contains(&w)),
            "Retry-After {wait:?}"
        );
    }
    // Refused before authentication: even a valid token from that address waits.
    let good = bearer(&token_for("alice", "upload"));
    let r = issue_from(&attacker, &sidecar.base, &good, None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another address is still served, and its own mistakes are still 401s.
    let neighbour = client_from("127.0.0.3");
    let r = issue_from(&neighbour, &sidecar.base, &good, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = issue_from(&neighbour, &sidecar.base, &bad[0], None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    sidecar.stop().await;
}

#[tokio::test]
async fn behind_trusted_proxies_each_forwarded_address_has_its_own_budget() {
    // One proxy in front: the rightmost X-Forwarded-For entry is the client; anything left of
    // it is what the client wrote and is ignored.
    let sidecar = Sidecar::start(
        "trust_proxy_hops = 1",
        "[presign.client_limit]\nper_minute = 1\nburst = 4\n",
    )
    .await;
    let proxy = reqwest::Client::new();
    let health = |forwarded: &'static str| {
        proxy
            .get(format!("{}/healthz", sidecar.base))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..8 {
        // The client varies the part it controls; its own address stays the last entry.
        let spoofed: &'static str =
            ["198.51.100.1, 203.0.113.9", "198.51.100.2, 203.0.113.9"][i % 2];
        statuses.push(health(spoofed).await.unwrap().status().as_u16());
    }
    assert_eq!(&statuses[..4], &[200; 4], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
    let limited = health("203.0.113.9").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&limited) >= 1);
    // Another client behind the same proxy is served.
    let other = issue_from(
        &proxy,
        &sidecar.base,
        &bearer(&token_for("alice", "upload")),
        Some("203.0.113.10"),
    )
    .await;
    assert_eq!(other.status(), StatusCode::CREATED);
    sidecar.stop().await;
}

/// Opens a connection and sends `head` then `trickle` one item every `every`, until the
/// server closes it or 20 s pass; returns how long the server took to close and what it said.
async fn trickle(base: &str, head: &str, items: &[&str], every: Duration) -> (Duration, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    let writer = tokio::spawn(async move {
        for item in items.iter().cycle() {
            tokio::time::sleep(every).await;
            if write.write_all(item.as_bytes()).await.is_err() {
                break;
            }
        }
        // Keep the write half open (dropping it would send FIN) until aborted.
        std::future::pending::<()>().await;
        drop(write);
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    writer.abort();
    assert!(read.is_ok(), "the connection was still open after 20 s");
    (took, String::from_utf8_lossy(&answer).to_string())
}

#[tokio::test]
async fn slow_or_idle_clients_are_cut_and_cannot_exhaust_connections() {
    let sidecar = Sidecar::start(
        "",
        "[presign.server]\nheader_read_timeout_secs = 4\nrequest_timeout_secs = 2\n\
         keep_alive_timeout_secs = 1\nmax_connections = 4\n",
    )
    .await;
    let within = |took: Duration, from: f64, to: f64| {
        assert!(
            took >= Duration::from_secs_f64(from) && took < Duration::from_secs_f64(to),
            "{took:?} not in {from}..{to} s"
        );
    };
    let every = Duration::from_millis(300);
    // A header line every 300 ms: never idle, but the head is not complete in 4 s.
    let (took, _) = trickle(
        &sidecar.base,
        "POST /v1/uploads HTTP/1.1\r\nHost: x\r\n",
        &["X-Slow: 1\r\n"],
        every,
    )
    .await;
    within(took, 3.5, 9.0);
    // A body byte every 300 ms: the request time-out answers a JSON 408 and closes.
    let token = bearer(&token_for("alice", "upload"));
    let (took, answer) = trickle(
        &sidecar.base,
        &format!(
            "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ),
        &[" "],
        every,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"timeout\""), "{answer}");
    within(took, 1.5, 8.0);
    // A connection that never sends anything: its first head is late, cut at 4 s.
    let (took, answer) = trickle(&sidecar.base, "", &[], Duration::from_secs(60)).await;
    assert!(answer.is_empty(), "{answer}");
    within(took, 3.5, 9.0);
    // After a response, a silent connection is cut by the keep-alive time-out (1 s), well
    // before the header-read one.
    within(idle_after_a_response(&sidecar.base).await, 0.8, 3.5);

    // Every connection slot taken by silent clients: a real request still gets through (it
    // waits in the backlog until they are cut).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(sidecar.base.trim_start_matches("http://"))
                .await
                .unwrap(),
        );
    }
    let started = tokio::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        sidecar.issue_with(Some(&token), upload_request("POST", "image/jpeg", 100)),
    )
    .await
    .expect("served once the silent connections are cut");
    assert_eq!(r.status(), StatusCode::CREATED);
    within(started.elapsed(), 0.0, 10.0);
    drop(idle);
    sidecar.stop().await;
}

/// Sends one keep-alive request, reads its answer, then stays silent: how long until the
/// server closes the connection.
async fn idle_after_a_response(base: &str) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("/healthz answers");
    let answered = tokio::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes an idle connection")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    answered.elapsed()
}

/// A JWKS endpoint on 127.0.0.1 that counts its requests; `status` and `hold` decide the
/// answer (a held request waits until `release`d).
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    hold: Arc<AtomicBool>,
    release: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(set: Value, status: StatusCode) -> JwksServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let release = Arc::new(tokio::sync::Notify::new());
        let (h, held, rel) = (hits.clone(), hold.clone(), release.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (set, h, held, rel) = (set.clone(), h.clone(), held.clone(), rel.clone());
                async move {
                    let notified = rel.notified();
                    h.fetch_add(1, Ordering::SeqCst);
                    if held.load(Ordering::SeqCst) {
                        notified.await;
                    }
                    (status, axum::Json(set))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        JwksServer {
            url,
            hits,
            hold,
            release,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.release.notify_waiters();
        self.task.abort();
    }
}

/// Waits (bounded) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_jwks_fetch_does_not_delay_requests_with_known_keys() {
    let jwks = JwksServer::start(
        jwks(jwt_keys::RS256_PRIVATE_PEM, Algorithm::RS256, "rs-1"),
        StatusCode::OK,
    )
    .await;
    let sidecar = Sidecar::start(
        "",
        // Many refused unknown-kid attempts below: keep the per-address failure budget out of
        // the way (it has its own test).
        &format!(
            "{}[presign.client_limit]\nauth_failures_burst = 1000\n",
            jwks_url_section(&jwks.url, "jwks_min_refetch_secs = 1")
        ),
    )
    .await;
    sidecar.wait_ready().await;
    assert_eq!(jwks.hits(), 1, "one fetch at start");

    // From now on the identity provider hangs. A token with an unknown kid asks for a
    // refetch (allowed once the 1 s interval has passed: retried until it gets one).
    jwks.hold.store(true, Ordering::SeqCst);
    let unknown = bearer(&rs256_token("rs-rotated", &aud_claims("dave")));
    let stuck = loop {
        let (http, base, auth) = (sidecar.http.clone(), sidecar.base.clone(), unknown.clone());
        let task = tokio::spawn(async move { issue_from(&http, &base, &auth, None).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while jwks.hits() < 2 && !task.is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no refetch for an unknown kid"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if jwks.hits() >= 2 {
            break task;
        }
        // Refused at once (interval not over yet), without fetching.
        assert_eq!(task.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    };
    // While that fetch hangs, requests with a known kid are answered at once, and so is
    // /readyz, which fetches nothing.
    let known = bearer(&rs256_token("rs-1", &aud_claims("dave")));
    for _ in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            issue_from(&sidecar.http, &sidecar.base, &known, None),
        )
        .await
        .expect("a known key does not wait for the JWKS fetch");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let ready = tokio::time::timeout(Duration::from_secs(2), sidecar.get("/readyz"))
        .await
        .expect("/readyz does not wait for the fetch");
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(!stuck.is_finished(), "the unknown kid waits for its fetch");
    assert_eq!(jwks.hits(), 2);
    jwks.hold.store(false, Ordering::SeqCst);
    jwks.release.notify_waiters();
    let r = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "still unknown after the fetch"
    );

    // Unknown kids are rate limited: a burst of them fetches at most once per 1 s interval
    // (once, on an idle machine; a loaded one may take seconds over the 20 requests).
    let before = jwks.hits();
    let burst = tokio::time::Instant::now();
    for i in 0..20 {
        let t = bearer(&rs256_token(&format!("garbage-{i}"), &aud_claims("dave")));
        let r = issue_from(&sidecar.http, &sidecar.base, &t, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let allowed = 1 + burst.elapsed().as_secs() as usize;
    assert!(
        jwks.hits() - before <= allowed,
        "{} fetches for 20 unknown kids in {:?}",
        jwks.hits() - before,
        burst.elapsed()
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn readyz_never_fetches_and_names_no_credential_problem() {
    let jwks = JwksServer::start(json!({"error": "down"}), StatusCode::INTERNAL_SERVER_ERROR).await;
    let sidecar = Sidecar::start(
        "",
        &format!(
            "{}[presign.client_limit]\nburst = 1000\n",
            jwks_url_section(&jwks.url, "")
        ),
    )
    .await;
    until("the start-up fetch", || jwks.hits() >= 1).await;
    for _ in 0..100 {
        let r = sidecar.get("/readyz").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"error": "not_ready", "message": "not ready"}));
    }
    // The failed fetch is retried after jwks_min_refetch_secs (30 s), not per probe.
    assert_eq!(jwks.hits(), 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_jwk_published_for_another_algorithm_or_use_verifies_nothing() {
    let mut set = jwks(jwt_keys::RS256_PRIVATE_PEM, Algorithm::RS256, "rs-1");
    set["keys"][0]["alg"] = json!("RS512");
    set["keys"][0]["use"] = json!("enc");
    let mut sig = set["keys"][0].clone();
    sig["kid"] = json!("rs-sig");
    sig["alg"] = json!("RS256");
    sig["use"] = json!("sig");
    set["keys"].as_array_mut().unwrap().push(sig);
    let jwks = JwksServer::start(set, StatusCode::OK).await;
    let sidecar = Sidecar::start("", &jwks_url_section(&jwks.url, "")).await;
    sidecar.wait_ready().await;
    // The same RSA key: refused under the JWK that says RS512/enc, accepted under the one
    // that says RS256/sig.
    let token = rs256_token("rs-1", &aud_claims("dave"));
    assert_401(&sidecar, "JWK for RS512, use=enc", Some(&bearer(&token))).await;
    let token = rs256_token("rs-sig", &aud_claims("dave"));
    let r = issue_from(&sidecar.http, &sidecar.base, &bearer(&token), None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_jwks_without_audience_or_over_http_refuses_to_start() {
    let run = |vars: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_resizeq-presign"));
        command
            .arg("--check")
            .env_clear()
            .env("RESIZEQ_PRESIGN__BUCKET", BUCKET)
            .env("RESIZEQ_AWS__REGION", strict_s3::REGION)
            .current_dir(std::env::temp_dir());
        for (k, v) in vars {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let url = (
        "RESIZEQ_PRESIGN__AUTH__JWT__JWKS_URL",
        "https://id.example.test/jwks.json",
    );
    let (code, log) = run(&[url]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("presign.auth.jwt.issuer and presign.auth.jwt.audience"),
        "{log}"
    );
    let issuer = ("RESIZEQ_PRESIGN__AUTH__JWT__ISSUER", ISSUER);
    let (code, log) = run(&[url, issuer]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("presign.auth.jwt.audience"), "{log}");
    let audience = ("RESIZEQ_PRESIGN__AUTH__JWT__AUDIENCE", AUDIENCE);
    let (code, log) = run(&[url, issuer, audience]);
    assert_eq!(code, Some(0), "{log}");
    let http = (
        "RESIZEQ_PRESIGN__AUTH__JWT__JWKS_URL",
        "http://id.example.test/jwks.json",
    );
    let (code, log) = run(&[http, issuer, audience]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("must be https://"), "{log}");
}

#[tokio::test]
async fn the_compat_route_without_a_size_is_a_400_naming_it() {
    let sidecar = Sidecar::start("compat_route = true\nmax_bytes = 1000", "").await;
    let url = format!("{}/image/presigned-uri", sidecar.base);
    let alice = bearer(&token_for("alice", "upload"));
    let r = sidecar
        .http
        .get(&url)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"].as_str().unwrap().contains("content_length"),
        "{body}"
    );
    // With a size it is signed, and S3 holds the upload to it.
    let r = sidecar
        .http
        .get(format!("{url}?content_length={}", SMALL_JPEG.len()))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let presigned = body["data"][0].as_str().unwrap();
    let headers = [("content-type".to_string(), "image/jpeg".to_string())];
    let r = put_body(presigned, &headers, JPEG).await;
    assert_s3_error(
        "compat upload over the signed size",
        &r,
        "SignatureDoesNotMatch",
    );
    let r = put_body(presigned, &headers, SMALL_JPEG).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = sidecar
        .http
        .get(format!("{url}?content_length=1001"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    sidecar.stop().await;
}

/// Where the worker's default key template puts the thumbnails.
const RESIZED: &str = "incoming-resized";

/// The browser test's interpreter (a venv with Playwright) and chromium, from
/// `scripts/browser.sh`'s variables or their defaults. Missing: the test fails where
/// `RESIZEQ_TEST_REQUIRE_ENDPOINT` is set (scripts/test), else it says it is skipped.
fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let python = std::env::var_os("RESIZEQ_BROWSER_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-venv/bin/python"),
        Into::into,
    );
    let chromium = std::env::var_os("RESIZEQ_CHROMIUM")
        .map_or_else(|| "/usr/bin/chromium".into(), std::path::PathBuf::from);
    let missing: Vec<String> = [&python, &chromium]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((python, chromium));
    }
    let why = format!(
        "browser test: {} missing (source scripts/browser.sh after apt-get install chromium)",
        missing.join(", ")
    );
    assert!(
        std::env::var_os("RESIZEQ_TEST_REQUIRE_ENDPOINT").is_none(),
        "{why}"
    );
    eprintln!("SKIPPED {why}");
    None
}

/// A real photo: a small one from the corpus when there is one, else a committed fixture.
fn photo() -> std::path::PathBuf {
    let corpus = std::env::var_os("RESIZEQ_CORPUS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
        Into::into,
    );
    let small = corpus.join("small01_greenmeadow.jpg");
    if small.is_file() {
        small
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/meta.jpg")
    }
}

/// The page's web server: the example page, the bucket's paths passed through to the strict
/// S3, and `/thumbs/…` read from the thumbnails bucket. s3s 0.14.1 has no bucket CORS (only
/// its DTOs), so the bucket is served from the page's own origin, as a CDN or proxy in front
/// of S3 would; the sidecar stays on another origin, so its CORS is exercised for real.
fn site(s3_endpoint: String, s3: aws_sdk_s3::Client) -> axum::Router {
    use axum::body::Body;
    use axum::extract::{Path, Request};
    use axum::response::{IntoResponse, Response};
    async fn forward(s3_endpoint: String, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut upstream = reqwest::Client::new()
            .request(parts.method.clone(), format!("{s3_endpoint}{path}"))
            .body(body);
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" && name != "connection" {
                upstream = upstream.header(name, value);
            }
        }
        let answer = upstream.send().await.unwrap();
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if name != "transfer-encoding" && name != "connection" && name != "content-length" {
                response = response.header(name, value);
            }
        }
        response
            .body(Body::from(answer.bytes().await.unwrap()))
            .unwrap()
    }
    let page =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/browser-upload/index.html");
    let (e1, e2) = (s3_endpoint.clone(), s3_endpoint);
    axum::Router::new()
        .route(
            "/upload.html",
            axum::routing::get(move || async move {
                axum::response::Html(std::fs::read_to_string(&page).unwrap())
            }),
        )
        .route(
            "/incoming",
            axum::routing::any(move |r: Request| forward(e1.clone(), r)),
        )
        .route(
            "/incoming/{*key}",
            axum::routing::any(move |r: Request| forward(e2.clone(), r)),
        )
        .route(
            "/thumbs/{*key}",
            axum::routing::get(move |Path(key): Path<String>| {
                let s3 = s3.clone();
                async move {
                    match s3.get_object().bucket(RESIZED).key(&key).send().await {
                        Ok(out) => {
                            let bytes = out.body.collect().await.unwrap().into_bytes();
                            ([("content-type", "image/jpeg")], bytes).into_response()
                        }
                        Err(_) => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        )
}

/// The worker's part: waits for the upload to land, renders its variants with resizeq's own
/// pipeline (default settings) and stores them as the worker does. Returns the upload's key.
async fn resize_the_upload(s3: aws_sdk_s3::Client) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let key = loop {
        let listed = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
        if let Some(key) = listed.contents().first().and_then(|o| o.key()) {
            break key.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no upload arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = s3
        .get_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    let bytes = out.body.collect().await.unwrap().into_bytes().to_vec();
    let source_key = key.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let pipeline =
            resizeq::pipeline::Pipeline::new(resizeq::pipeline::PipelineSettings::default())
                .unwrap();
        pipeline.process(&bytes, &source_key).unwrap()
    })
    .await
    .unwrap();
    for variant in rendered.variants {
        s3.put_object()
            .bucket(RESIZED)
            .key(&variant.key)
            .content_type("image/jpeg")
            .body(variant.bytes.into())
            .send()
            .await
            .unwrap();
    }
    key
}

#[tokio::test]
async fn a_browser_uploads_a_real_photo_through_the_example_page() {
    let Some((python, chromium)) = browser() else {
        return;
    };
    let s3 = StrictS3::start(BUCKET).await;
    s3.s3.create_bucket().bucket(RESIZED).send().await.unwrap();
    let client = s3.s3.clone();
    let site_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", site_listener.local_addr().unwrap());
    let site_task = tokio::spawn({
        let app = site(s3.endpoint.clone(), client.clone());
        async move { axum::serve(site_listener, app).await.unwrap() }
    });
    // The issued POST URL is the page's origin (see `site`); browsers on that origin may call
    // the sidecar.
    let sidecar = Sidecar::start_on(
        s3,
        &origin,
        "",
        &format!("[presign.cors]\nallowed_origins = [\"{origin}\"]\n"),
    )
    .await;
    let worker = tokio::spawn(resize_the_upload(client));

    let mut page = reqwest::Url::parse(&format!("{origin}/upload.html")).unwrap();
    page.query_pairs_mut()
        .append_pair("sidecar", &sidecar.base)
        .append_pair("thumbnail_url", &format!("{origin}/thumbs/80/{{key}}.jpg"));
    let photo = photo();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/upload.py"))
        .arg("--page")
        .arg(page.as_str())
        .arg("--chromium")
        .arg(&chromium)
        .arg("--token")
        .arg(token_for("alice", "upload"))
        .arg("--file")
        .arg(&photo)
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("RESIZEQ_BROWSER_SCREENSHOT") {
        command.arg("--screenshot").arg(path);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the browser script finishes within 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let shown: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // What the page showed is what the sidecar issued and S3 stored.
    let key = shown["key"].as_str().unwrap();
    assert!(
        key.starts_with("uploads/alice/") && key.ends_with(".jpg"),
        "{shown}"
    );
    assert_eq!(shown["content_type"], "image/jpeg", "{shown}");
    assert_eq!(shown["progress"], 100.0, "{shown}");
    assert_eq!(shown["thumbnail_width"], 80, "{shown}");
    let (bytes, metadata, content_type) = sidecar.s3.object(BUCKET, key).await.unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&photo).unwrap(),
        "the bytes chosen in the page"
    );
    assert_eq!(content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(metadata.get("uploader").map(String::as_str), Some("alice"));
    assert_eq!(sidecar.s3.object_count(BUCKET).await, 1);
    assert_eq!(worker.await.unwrap(), key);
    sidecar.stop().await;
    site_task.abort();
}
