//! SigV4 POST policies: the browser-upload form that S3 checks against a signed JSON policy.
//!
//! The Rust SDK presigns only query-string requests (PUT, GET), so this module implements the
//! documented algorithm ("Browser-Based Uploads Using POST (AWS Signature Version 4)"):
//! the policy JSON is base64-encoded, that text is the string to sign, and the signature is
//! HMAC-SHA256 with the usual SigV4 signing key (`AWS4` + secret → date → region → `s3` →
//! `aws4_request`). Pure: time and credentials are parameters, so the known-answer tests below
//! reproduce AWS's published example exactly.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use sha2::Sha256;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "s3";

/// What signs: an access key pair, with the session token of temporary credentials.
#[derive(Clone)]
pub struct SigningCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SigningCredentials {
    // Never print the secret or the token, even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// One policy condition, in the JSON forms S3 documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `["eq", "$field", "value"]`: the form field must equal `value` exactly.
    Eq(String, String),
    /// `["content-length-range", min, max]`: the file part's size, inclusive.
    ContentLengthRange(u64, u64),
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Condition::Eq(field, value) => {
                let mut seq = s.serialize_seq(Some(3))?;
                seq.serialize_element("eq")?;
                seq.serialize_element(&format!("${field}"))?;
                seq.serialize_element(value)?;
                seq.end()
            }
            Condition::ContentLengthRange(min, max) => {
                let mut seq = s.serialize_seq(Some(3))?;
                seq.serialize_element("content-length-range")?;
                seq.serialize_element(min)?;
                seq.serialize_element(max)?;
                seq.end()
            }
        }
    }
}

/// Form fields in the order they are to be sent (the file part comes after all of them),
/// serialized as a flat JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for FormFields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A POST upload to one exact key: what the sidecar binds every upload to.
#[derive(Debug, Clone)]
pub struct PostUpload<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    pub uploader: &'a str,
    pub max_bytes: u64,
    pub region: &'a str,
    pub now: SystemTime,
    pub expires_in: Duration,
}

/// `20151229T000000Z` (`x-amz-date`) from a time.
pub fn amz_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// `2015-12-30T12:00:00.000Z`, the policy's `expiration` format.
pub fn iso8601_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The SigV4 signing key for a day (`yyyymmdd`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The hex signature of a base64 policy: the policy text itself is the string to sign.
pub fn sign_policy(policy_base64: &str, secret: &str, date: &str, region: &str) -> String {
    let key = signing_key(secret, date, region, SERVICE);
    hex::encode(hmac_sha256(&key, policy_base64.as_bytes()))
}

/// The policy document and the form fields for `upload`, signed with `credentials`.
/// Every field is bound by an `eq` condition (S3 rejects a form field that no condition
/// covers), so the browser can change nothing but the file, and that only within
/// `1..=max_bytes`.
pub fn presign_post(upload: &PostUpload<'_>, credentials: &SigningCredentials) -> FormFields {
    let date_time = amz_date(upload.now);
    let date = &date_time[..8];
    let credential = format!(
        "{}/{date}/{}/{SERVICE}/aws4_request",
        credentials.access_key_id, upload.region
    );
    let mut fields: Vec<(String, String)> = vec![
        ("key".into(), upload.key.into()),
        ("Content-Type".into(), upload.content_type.into()),
        ("x-amz-meta-uploader".into(), upload.uploader.into()),
        ("x-amz-algorithm".into(), ALGORITHM.into()),
        ("x-amz-credential".into(), credential),
        ("x-amz-date".into(), date_time.clone()),
    ];
    if let Some(token) = &credentials.session_token {
        fields.push(("x-amz-security-token".into(), token.clone()));
    }
    let mut conditions = vec![Condition::Eq("bucket".into(), upload.bucket.into())];
    conditions.extend(
        fields
            .iter()
            .map(|(name, value)| Condition::Eq(name.clone(), value.clone())),
    );
    conditions.push(Condition::ContentLengthRange(1, upload.max_bytes));
    let policy = serde_json::json!({
        "expiration": iso8601_millis(upload.now + upload.expires_in),
        "conditions": conditions,
    });
    let policy_base64 = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let signature = sign_policy(
        &policy_base64,
        &credentials.secret_access_key,
        date,
        upload.region,
    );
    fields.push(("policy".into(), policy_base64));
    fields.push(("x-amz-signature".into(), signature));
    FormFields(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example credentials of AWS's SigV4 documentation.
    const EXAMPLE_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// "Example: Browser-Based Upload using HTTP POST (Using AWS Signature Version 4)", S3 API
    /// reference: the policy exactly as published (base64, CRLF line ends inside) and the
    /// signature it states.
    const AWS_EXAMPLE_POLICY: &str = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
    const AWS_EXAMPLE_SIGNATURE: &str =
        "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e";

    #[test]
    fn signature_matches_the_aws_browser_post_example() {
        assert_eq!(
            sign_policy(AWS_EXAMPLE_POLICY, EXAMPLE_SECRET, "20151229", "us-east-1"),
            AWS_EXAMPLE_SIGNATURE
        );
        // The published policy is what we think it is (its credential scope and date).
        let json = base64::engine::general_purpose::STANDARD
            .decode(AWS_EXAMPLE_POLICY)
            .unwrap();
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains("AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"));
        // One changed byte of the policy changes the signature.
        let mut tampered = AWS_EXAMPLE_POLICY.to_string();
        tampered.replace_range(10..11, "A");
        assert_ne!(
            sign_policy(&tampered, EXAMPLE_SECRET, "20151229", "us-east-1"),
            AWS_EXAMPLE_SIGNATURE
        );
    }

    #[test]
    fn signing_key_matches_the_aws_derivation_example() {
        // "Examples of how to derive a signing key for Signature Version 4" (AWS General
        // Reference): secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam.
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn dates_use_the_sigv4_formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_451_347_200); // 2015-12-29T00:00:00Z
        assert_eq!(amz_date(t), "20151229T000000Z");
        assert_eq!(
            iso8601_millis(t + Duration::from_secs(36 * 3600)),
            "2015-12-30T12:00:00.000Z"
        );
    }

    fn example_upload(now: SystemTime) -> PostUpload<'static> {
        PostUpload {
            bucket: "photos",
            key: "uploads/alice/0b6c.jpg",
            content_type: "image/jpeg",
            uploader: "alice",
            max_bytes: 20 * 1024 * 1024,
            region: "us-east-1",
            now,
            expires_in: Duration::from_secs(300),
        }
    }

    #[test]
    fn our_policy_binds_every_field_and_is_signed_as_sent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_451_347_200);
        let credentials = SigningCredentials {
            access_key_id: EXAMPLE_ACCESS_KEY.into(),
            secret_access_key: EXAMPLE_SECRET.into(),
            session_token: Some("session-token".into()),
        };
        let fields = presign_post(&example_upload(now), &credentials);
        let policy = fields.get("policy").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(policy)
            .unwrap();
        let policy_json: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            policy_json,
            serde_json::json!({
                "expiration": "2015-12-29T00:05:00.000Z",
                "conditions": [
                    ["eq", "$bucket", "photos"],
                    ["eq", "$key", "uploads/alice/0b6c.jpg"],
                    ["eq", "$Content-Type", "image/jpeg"],
                    ["eq", "$x-amz-meta-uploader", "alice"],
                    ["eq", "$x-amz-algorithm", "AWS4-HMAC-SHA256"],
                    ["eq", "$x-amz-credential", "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"],
                    ["eq", "$x-amz-date", "20151229T000000Z"],
                    ["eq", "$x-amz-security-token", "session-token"],
                    ["content-length-range", 1, 20971520],
                ]
            })
        );
        assert_eq!(
            fields.get("x-amz-signature").unwrap(),
            sign_policy(policy, EXAMPLE_SECRET, "20151229", "us-east-1")
        );
        // The signature and the policy are the last fields; the file goes after them.
        let names: Vec<&str> = fields.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["policy", "x-amz-signature"]);
        let debug = format!("{credentials:?}");
        assert!(!debug.contains(EXAMPLE_SECRET) && !debug.contains("session-token"));
    }

    #[test]
    fn long_term_credentials_send_no_token_field() {
        let credentials = SigningCredentials {
            access_key_id: EXAMPLE_ACCESS_KEY.into(),
            secret_access_key: EXAMPLE_SECRET.into(),
            session_token: None,
        };
        let fields = presign_post(&example_upload(SystemTime::now()), &credentials);
        assert!(fields.get("x-amz-security-token").is_none());
    }
}
