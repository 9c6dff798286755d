//! What a queue message says happened: S3 event notifications (direct, inside an SNS
//! notification, or as EventBridge "Object Created" / "Object Deleted"), and the
//! `s3:TestEvent` S3 sends when a notification is configured. Anything else is poison.

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// An object's entity tag, normalised once where it enters (adapters, event parsing): S3
/// headers quote it (`"abc"`), events and listings may not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ETag(String);

impl ETag {
    pub fn new(raw: &str) -> ETag {
        ETag(raw.trim_matches('"').to_string())
    }

    /// Without quotes, as events carry it and as variants record it in their metadata.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ETag of stores that have no S3 to ask (a local folder, memory): FNV-1a 64 of the
    /// bytes as 16 hex digits, so an unchanged file keeps its ETag across restarts.
    pub fn of_bytes(bytes: &[u8]) -> ETag {
        ETag(format!("{:016x}", crate::fnv::fnv1a64(bytes)))
    }

    /// In quotes, as an `If-Match` header wants it.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl std::ops::Deref for ETag {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ETag {
    fn from(raw: &str) -> ETag {
        ETag::new(raw)
    }
}

impl PartialEq<str> for ETag {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.trim_matches('"')
    }
}

impl PartialEq<String> for ETag {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ETag> for String {
    fn eq(&self, other: &ETag) -> bool {
        other == self
    }
}

impl PartialEq<&str> for ETag {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

/// One object that was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    /// Decoded: S3 notifications form-encode keys (`+` is a space, `%2B` a plus).
    pub key: String,
    pub etag: Option<ETag>,
    pub size: Option<u64>,
    pub sequencer: Option<String>,
    pub version_id: Option<String>,
    /// RFC 3339, as the event carried it.
    pub event_time: Option<String>,
}

impl ObjectCreated {
    /// An event for an object, as a caller that lists or watches objects knows it (backfill,
    /// local mode): no event time, sequencer or version.
    pub fn new(bucket: &str, key: &str, etag: Option<ETag>, size: Option<u64>) -> ObjectCreated {
        ObjectCreated {
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            size,
            sequencer: None,
            version_id: None,
            event_time: None,
        }
    }
}

/// One object that was removed: deleted, hidden by a delete marker, or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRemoved {
    pub bucket: String,
    /// Decoded, as [`ObjectCreated::key`].
    pub key: String,
    pub sequencer: Option<String>,
    pub version_id: Option<String>,
    pub event_time: Option<String>,
}

impl ObjectRemoved {
    pub fn new(bucket: &str, key: &str) -> ObjectRemoved {
        ObjectRemoved {
            bucket: bucket.to_string(),
            key: key.to_string(),
            sequencer: None,
            version_id: None,
            event_time: None,
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEvent {
    Created(ObjectCreated),
    Removed(ObjectRemoved),
}

impl ObjectEvent {
    pub fn bucket(&self) -> &str {
        match self {
            ObjectEvent::Created(e) => &e.bucket,
            ObjectEvent::Removed(e) => &e.bucket,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            ObjectEvent::Created(e) => &e.key,
            ObjectEvent::Removed(e) => &e.key,
        }
    }
}

impl From<ObjectCreated> for ObjectEvent {
    fn from(event: ObjectCreated) -> ObjectEvent {
        ObjectEvent::Created(event)
    }
}

impl From<ObjectRemoved> for ObjectEvent {
    fn from(event: ObjectRemoved) -> ObjectEvent {
        ObjectEvent::Removed(event)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `s3:TestEvent`: acknowledge and ignore.
    Test,
    /// The message's records in order (event types other than created and removed are left
    /// out). A record that cannot be read is an error in its place, so that one bad record
    /// does not strand the others.
    Records(Vec<Result<ObjectEvent>>),
}

impl Parsed {
    /// The created objects among the readable records (backfill, `dlq peek`).
    pub fn created(&self) -> Vec<&ObjectCreated> {
        match self {
            Parsed::Test => Vec::new(),
            Parsed::Records(records) => records
                .iter()
                .filter_map(|r| match r {
                    Ok(ObjectEvent::Created(e)) => Some(e),
                    _ => None,
                })
                .collect(),
        }
    }
}

fn poison(reason: impl Into<String>) -> Error {
    Error::new(ErrorKind::Poison, reason)
}

/// Parses a message body.
pub fn parse(body: &str) -> Result<Parsed> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| poison(format!("body is not JSON: {e}")))?;
    parse_value(&value, 0)
}

fn parse_value(value: &Value, depth: u8) -> Result<Parsed> {
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Parsed::Test);
    }
    if let Some(records) = value.get("Records") {
        let records = records
            .as_array()
            .ok_or_else(|| poison("`Records` is not an array"))?;
        let parsed = records
            .iter()
            .enumerate()
            .filter_map(|(i, record)| {
                s3_record(record)
                    .map_err(|e| e.context(format!("Records[{i}]")))
                    .transpose()
            })
            .collect();
        return Ok(Parsed::Records(parsed));
    }
    // SNS: {"Type":"Notification","Message":"<the S3 event as a JSON string>"}.
    if value.get("Type").and_then(Value::as_str) == Some("Notification") && depth == 0 {
        let inner = value
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| poison("SNS notification without a string `Message`"))?;
        let inner: Value = serde_json::from_str(inner)
            .map_err(|e| poison(format!("SNS `Message` is not JSON: {e}")))?;
        return parse_value(&inner, depth + 1);
    }
    if value.get("source").and_then(Value::as_str) == Some("aws.s3")
        && value.get("detail-type").is_some()
    {
        return eventbridge(value);
    }
    Err(poison(
        "not an S3 event notification, SNS notification or EventBridge S3 event",
    ))
}

/// What an S3 `eventName` is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Removed,
}

/// `ObjectCreated:*`, and `ObjectRemoved:*` / `LifecycleExpiration:*` (an expired object is
/// as gone as a deleted one); `None` for the other event types (restores, replication…).
fn change_of(event_name: &str) -> Option<Change> {
    if event_name.starts_with("ObjectCreated:") {
        Some(Change::Created)
    } else if event_name.starts_with("ObjectRemoved:")
        || event_name.starts_with("LifecycleExpiration:")
    {
        Some(Change::Removed)
    } else {
        None
    }
}

/// One record of an S3 event notification; `None` for event types we do not act on. A record
/// without an `eventName` is taken as a created object (hand-made events).
fn s3_record(record: &Value) -> Result<Option<ObjectEvent>> {
    let change = match record.get("eventName").and_then(Value::as_str) {
        Some(name) => match change_of(name) {
            Some(change) => change,
            None => return Ok(None),
        },
        None => Change::Created,
    };
    let s3 = record
        .get("s3")
        .ok_or_else(|| poison("record without `s3`"))?;
    let bucket =
        str_at(s3, &["bucket", "name"]).ok_or_else(|| poison("record without `s3.bucket.name`"))?;
    let raw_key =
        str_at(s3, &["object", "key"]).ok_or_else(|| poison("record without `s3.object.key`"))?;
    let key = form_decode(raw_key).ok_or_else(|| {
        poison(format!(
            "`s3.object.key` is not valid form encoding: {raw_key:?}"
        ))
    })?;
    let object = &s3["object"];
    if change == Change::Removed {
        return Ok(Some(ObjectEvent::Removed(ObjectRemoved {
            bucket: bucket.to_string(),
            key,
            sequencer: text(object, "sequencer"),
            version_id: text(object, "versionId"),
            event_time: text(record, "eventTime"),
        })));
    }
    Ok(Some(ObjectEvent::Created(ObjectCreated {
        bucket: bucket.to_string(),
        key,
        etag: text(object, "eTag").map(|e| ETag::new(&e)),
        size: object.get("size").and_then(Value::as_u64),
        sequencer: text(object, "sequencer"),
        version_id: text(object, "versionId"),
        event_time: text(record, "eventTime"),
    })))
}

/// EventBridge "Object Created" and "Object Deleted" (deletes, delete markers and lifecycle
/// expirations alike): keys are plain there, not form-encoded (a published real event carries
/// `:` as it is, where an S3 notification would send `%3A`).
fn eventbridge(value: &Value) -> Result<Parsed> {
    let change = match value.get("detail-type").and_then(Value::as_str) {
        Some("Object Created") => Change::Created,
        Some("Object Deleted") => Change::Removed,
        _ => return Ok(Parsed::Records(Vec::new())),
    };
    let detail = value
        .get("detail")
        .ok_or_else(|| poison("EventBridge event without `detail`"))?;
    let bucket = str_at(detail, &["bucket", "name"])
        .ok_or_else(|| poison("EventBridge event without `detail.bucket.name`"))?;
    let key = str_at(detail, &["object", "key"])
        .ok_or_else(|| poison("EventBridge event without `detail.object.key`"))?;
    let object = &detail["object"];
    let event = match change {
        Change::Created => ObjectEvent::Created(ObjectCreated {
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: text(object, "etag").map(|e| ETag::new(&e)),
            size: object.get("size").and_then(Value::as_u64),
            sequencer: text(object, "sequencer"),
            version_id: text(object, "version-id"),
            event_time: text(value, "time"),
        }),
        Change::Removed => ObjectEvent::Removed(ObjectRemoved {
            bucket: bucket.to_string(),
            key: key.to_string(),
            sequencer: text(object, "sequencer"),
            version_id: text(object, "version-id"),
            event_time: text(value, "time"),
        }),
    };
    Ok(Parsed::Records(vec![Ok(event)]))
}

/// An optional string field (S3 and EventBridge spell the same fields differently).
fn text(value: &Value, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(String::from)
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, k| v.get(k))?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// `application/x-www-form-urlencoded` decoding, as S3 applies to keys in notifications.
pub fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The body of an S3 ObjectCreated notification as S3 would send it (backfill enqueues these;
/// tests use them as the queue's input).
pub fn s3_notification(bucket: &str, key: &str, etag: Option<&str>, size: Option<u64>) -> String {
    let mut object = serde_json::json!({ "key": form_encode(key) });
    if let Some(etag) = etag {
        object["eTag"] = etag.into();
    }
    if let Some(size) = size {
        object["size"] = size.into();
    }
    notification("ObjectCreated:Put", bucket, object)
}

/// The body of an S3 `ObjectRemoved:Delete` notification (tests).
pub fn s3_removed_notification(bucket: &str, key: &str, sequencer: Option<&str>) -> String {
    let mut object = serde_json::json!({ "key": form_encode(key) });
    if let Some(sequencer) = sequencer {
        object["sequencer"] = sequencer.into();
    }
    notification("ObjectRemoved:Delete", bucket, object)
}

fn notification(event_name: &str, bucket: &str, object: Value) -> String {
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": event_name,
            "s3": { "bucket": { "name": bucket }, "object": object },
        }]
    })
    .to_string()
}

/// The inverse of [`form_decode`], as S3 encodes keys.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The created objects of a body whose every record reads.
    fn created(body: &str) -> Vec<ObjectCreated> {
        match parse(body).unwrap() {
            Parsed::Records(records) => records
                .into_iter()
                .map(|r| match r.unwrap() {
                    ObjectEvent::Created(e) => e,
                    other => panic!("not a created object: {other:?}"),
                })
                .collect(),
            Parsed::Test => panic!("a test event"),
        }
    }

    const S3_EVENT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
      "eventTime":"2024-05-01T12:00:00.000Z","eventName":"ObjectCreated:Put",
      "s3":{"bucket":{"name":"photos"},"object":{"key":"a+b%2Bc/%C3%A9t%C3%A9.jpg","size":1234,
      "eTag":"0123abcd","sequencer":"0055AED6DCD90281E5","versionId":"v1"}}}]}"#;

    #[test]
    fn s3_notification_keys_are_form_decoded() {
        let events = created(S3_EVENT);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.bucket, "photos");
        assert_eq!(e.key, "a b+c/été.jpg");
        assert_eq!(e.etag, Some(ETag::new("0123abcd")));
        assert_eq!(e.size, Some(1234));
        assert_eq!(e.sequencer.as_deref(), Some("0055AED6DCD90281E5"));
        assert_eq!(e.version_id.as_deref(), Some("v1"));
        assert_eq!(e.event_time.as_deref(), Some("2024-05-01T12:00:00.000Z"));
    }

    #[test]
    fn only_bucket_and_key_are_required() {
        let body = r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#;
        let events = created(body);
        assert_eq!(events[0].key, "k");
        assert_eq!(events[0].etag, None);
    }

    #[test]
    fn test_event_is_recognised() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T12:00:00Z","Bucket":"photos","RequestId":"x","HostId":"y"}"#;
        assert_eq!(parse(body).unwrap(), Parsed::Test);
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let body = serde_json::json!({"Type":"Notification","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:1:t","Message": S3_EVENT}).to_string();
        let events = created(&body);
        assert_eq!(events[0].key, "a b+c/été.jpg");
    }

    #[test]
    fn eventbridge_object_created_is_understood() {
        let body = r#"{"version":"0","id":"1","detail-type":"Object Created","source":"aws.s3","time":"2024-05-01T12:00:00Z",
          "detail":{"version":"0","bucket":{"name":"photos"},"object":{"key":"a b.jpg","size":5,"etag":"e1","sequencer":"s","version-id":"v"},"reason":"PutObject"}}"#;
        let events = created(body);
        assert_eq!(events[0].key, "a b.jpg");
        assert_eq!(events[0].etag, Some(ETag::new("e1")));
        assert_eq!(
            events[0].event_time.as_deref(),
            Some("2024-05-01T12:00:00Z")
        );
    }

    #[test]
    fn other_event_types_are_left_out() {
        let body = r#"{"Records":[{"eventName":"ObjectRestore:Completed","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#;
        assert_eq!(parse(body).unwrap(), Parsed::Records(vec![]));
        let body = r#"{"version":"0","detail-type":"Object Restore Completed","source":"aws.s3","detail":{}}"#;
        assert_eq!(parse(body).unwrap(), Parsed::Records(vec![]));
    }

    #[test]
    fn removals_are_understood_in_every_envelope() {
        let removed = |name: &str| {
            format!(
                r#"{{"Records":[{{"eventName":"{name}","eventTime":"2024-05-01T12:00:00.000Z","s3":{{"bucket":{{"name":"photos"}},
                  "object":{{"key":"a+b.jpg","sequencer":"0A","versionId":"v2"}}}}}}]}}"#
            )
        };
        let want = ObjectEvent::Removed(ObjectRemoved {
            bucket: "photos".into(),
            key: "a b.jpg".into(),
            sequencer: Some("0A".into()),
            version_id: Some("v2".into()),
            event_time: Some("2024-05-01T12:00:00.000Z".into()),
        });
        for name in [
            "ObjectRemoved:Delete",
            "ObjectRemoved:DeleteMarkerCreated",
            "LifecycleExpiration:Delete",
        ] {
            let body = removed(name);
            assert_eq!(
                parse(&body).unwrap(),
                Parsed::Records(vec![Ok(want.clone())])
            );
            let sns = serde_json::json!({"Type":"Notification","Message": body}).to_string();
            assert_eq!(
                parse(&sns).unwrap(),
                Parsed::Records(vec![Ok(want.clone())])
            );
        }
        let eventbridge = r#"{"version":"0","id":"1","detail-type":"Object Deleted","source":"aws.s3","time":"2024-05-01T12:00:00.000Z",
          "detail":{"bucket":{"name":"photos"},"object":{"key":"a b.jpg","sequencer":"0A","version-id":"v2"},"deletion-type":"Permanently Deleted"}}"#;
        assert_eq!(parse(eventbridge).unwrap(), Parsed::Records(vec![Ok(want)]));
    }

    #[test]
    fn a_bad_record_does_not_hide_the_others() {
        let body = r#"{"Records":[
          {"s3":{"bucket":{"name":"b"},"object":{"key":"one"}}},
          {"s3":{"bucket":{"name":"b"}}},
          {"s3":{"bucket":{"name":"b"},"object":{"key":"three"}}}]}"#;
        let Parsed::Records(records) = parse(body).unwrap() else {
            panic!("records expected")
        };
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].as_ref().unwrap().key(), "one");
        let err = records[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Poison);
        assert!(err.to_string().contains("Records[1]"), "{err}");
        assert_eq!(records[2].as_ref().unwrap().key(), "three");
    }

    #[test]
    fn garbage_is_poison_with_a_reason() {
        for body in ["not json", "{}", r#"{"Records":{}}"#] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Poison, "{body}: {err}");
            assert!(err.is_permanent());
        }
        for record in [
            r#"{"Records":[{"s3":{"bucket":{"name":"b"}}}]}"#,
            r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#,
        ] {
            let Parsed::Records(records) = parse(record).unwrap() else {
                panic!("records expected")
            };
            let err = records[0].as_ref().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Poison, "{record}: {err}");
        }
    }

    #[test]
    fn form_encoding_round_trips() {
        for key in ["a b+c/été.jpg", "100%/x?y=z&w", "plain/key.png"] {
            assert_eq!(form_decode(&form_encode(key)).unwrap(), key);
        }
        let events = created(&s3_notification("b", "a b+c.jpg", Some("e"), Some(3)));
        assert_eq!(events[0].key, "a b+c.jpg");
    }
}
