//! `resizeq-presign` end to end through real HTTP: the sidecar's router on 127.0.0.1, a
//! strict S3 (`s3s-fs`, in-process, SigV4 enforced) behind it, and uploads made exactly as a
//! browser makes them (multipart/form-data POST with the returned fields then the file; PUT
//! with the returned headers). Moto is not used here: it checks no signature, expiry or policy.

use crate::common::jwt_keys;
use crate::common::s3s as strict_s3;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
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
            s3.endpoint
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resizeq.toml");
        std::fs::write(&path, text).unwrap();
        let config = SidecarConfig::load_from(Some(&path), Vec::new()).unwrap();
        let signer = SdkUploadSigner::shared(&s3.sdk, &config.aws).unwrap();
        let router = presign::build(&config, signer).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(presign::serve(listener, router, async {
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
    assert!(issued["key"]
        .as_str()
        .unwrap()
        .starts_with("uploads/kiosk/"));
    assert_eq!(issued["headers"]["x-amz-meta-uploader"], "kiosk");
    let r = put_body(issued["url"].as_str().unwrap(), &put_headers(&issued), JPEG).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
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
    let sidecar = Sidecar::start(
        "",
        &format!("[presign.auth.jwt]\njwks_url = \"{jwks_url}\"\nissuer = \"{ISSUER}\"\n"),
    )
    .await;
    let ready = sidecar
        .http
        .get(format!("{}/readyz", sidecar.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "{}",
        ready.text().await.unwrap()
    );

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rs-1".into());
    let key = EncodingKey::from_rsa_pem(jwt_keys::RS256_PRIVATE_PEM.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims("dave", "upload"), &key).unwrap();
    let response = sidecar
        .issue_with(
            Some(&bearer(&token)),
            upload_request("PUT", "image/webp", 100),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    assert!(issued["key"].as_str().unwrap().starts_with("uploads/dave/"));
    header.kid = Some("rs-unknown".into());
    let token = jsonwebtoken::encode(&header, &claims("dave", "upload"), &key).unwrap();
    assert_401(&sidecar, "unknown kid", Some(&bearer(&token))).await;
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
    let sidecar = Sidecar::start("compat_route = true", "").await;
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
    assert!(all.contains("request refused"), "{all}");
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
