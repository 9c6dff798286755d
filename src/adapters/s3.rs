//! [`Store`] on Amazon S3 (and S3-compatible stores).

use std::collections::HashMap;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use crate::adapters::aws::classify;
use crate::error::{Error, Result};
use crate::ports::{
    Condition, ETag, GetOutcome, ListPage, ListQuery, ListedObject, ObjectInfo, PutObject, Store,
    Written, MAX_LIST_PAGE,
};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    pub fn new(client: Client) -> Self {
        S3Store { client }
    }
}

fn info(
    etag: Option<&str>,
    size: Option<i64>,
    content_type: Option<&str>,
    metadata: Option<&HashMap<String, String>>,
) -> ObjectInfo {
    ObjectInfo {
        etag: ETag::new(etag.unwrap_or_default()),
        size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        content_type: content_type.map(str::to_string),
        metadata: metadata.cloned().unwrap_or_default(),
    }
}

/// What a failed GET means: the object is gone, it changed, or a real error.
fn get_error(bucket: &str, key: &str, err: SdkError<GetObjectError>) -> Result<GetOutcome> {
    let status = err.raw_response().map(|r| r.status().as_u16());
    if let SdkError::ServiceError(service) = &err {
        if service.err().is_no_such_key() {
            return Ok(GetOutcome::NotFound);
        }
    }
    // A source bucket deleted since the event took the object with it: gone, not a fault that
    // passes (a missing *destination* bucket, on PUT, stays transient: an operator creates it).
    if aws_sdk_s3::error::ProvideErrorMetadata::code(&err) == Some("NoSuchBucket") {
        return Ok(GetOutcome::NotFound);
    }
    if status == Some(412)
        || aws_sdk_s3::error::ProvideErrorMetadata::code(&err) == Some("PreconditionFailed")
    {
        return Ok(GetOutcome::Changed);
    }
    Err(classify(&format!("s3 GetObject {bucket}/{key}"), err))
}

/// Whether a failed conditional write or delete failed on its condition: 412
/// PreconditionFailed, 409 ConditionalRequestConflict (another conditional write to the key
/// was in progress), or 404 NoSuchKey for an `If-Match` on a key that is gone.
fn condition_failed<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &SdkError<E>,
    condition: &Condition,
) -> bool {
    if *condition == Condition::Any {
        return false;
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = aws_sdk_s3::error::ProvideErrorMetadata::code(err);
    matches!(status, Some(412 | 409))
        || matches!(
            code,
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        )
        || (matches!(condition, Condition::Matches(_))
            && (status == Some(404) || code == Some("NoSuchKey")))
}

/// The `If-Match` / `If-None-Match` headers of a condition.
fn condition_headers(condition: &Condition) -> (Option<String>, Option<String>) {
    match condition {
        Condition::Any => (None, None),
        Condition::Absent => (None, Some("*".to_string())),
        Condition::Matches(etag) => (Some(etag.quoted()), None),
    }
}

impl Store for S3Store {
    async fn get(&self, bucket: &str, key: &str, if_match: Option<&ETag>) -> Result<GetOutcome> {
        let result = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(if_match.map(ETag::quoted))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(err) => return get_error(bucket, key, err),
        };
        let info = info(
            out.e_tag(),
            out.content_length(),
            out.content_type(),
            out.metadata(),
        );
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| {
                Error::io(format!(
                    "s3 GetObject {bucket}/{key}: reading the body: {e}"
                ))
            })?
            .into_bytes()
            .to_vec();
        let info = ObjectInfo {
            size: bytes.len() as u64,
            ..info
        };
        Ok(GetOutcome::Found { bytes, info })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        let result = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(info(
                out.e_tag(),
                out.content_length(),
                out.content_type(),
                out.metadata(),
            ))),
            // A HEAD answer has no body, so a 404 for a missing bucket looks the same as one
            // for a missing key: both are "not there".
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {
                Ok(None)
            }
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(err) => Err(classify(&format!("s3 HeadObject {bucket}/{key}"), err)),
        }
    }

    async fn put(&self, object: PutObject) -> Result<Written> {
        let op = format!("s3 PutObject {}/{}", object.bucket, object.key);
        let metadata = (!object.metadata.is_empty()).then_some(object.metadata);
        let (if_match, if_none_match) = condition_headers(&object.condition);
        let result = self
            .client
            .put_object()
            .bucket(object.bucket)
            .key(object.key)
            .content_type(object.content_type)
            .set_cache_control(object.cache_control)
            .set_metadata(metadata)
            .set_if_match(if_match)
            .set_if_none_match(if_none_match)
            .content_length(object.bytes.len() as i64)
            .body(ByteStream::from(object.bytes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written::Done),
            Err(e) if condition_failed(&e, &object.condition) => Ok(Written::ConditionFailed),
            Err(e) => Err(classify(&op, e)),
        }
    }

    async fn delete(&self, bucket: &str, key: &str, condition: &Condition) -> Result<Written> {
        let (if_match, if_none_match) = condition_headers(condition);
        if if_none_match.is_some() {
            return Err(Error::new(
                crate::error::ErrorKind::Config,
                "a delete cannot be conditional on the object being absent",
            ));
        }
        let result = self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(if_match)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written::Done),
            // An If-Match delete of a missing key answers 404: someone else deleted it.
            Err(e) if condition_failed(&e, condition) => Ok(Written::ConditionFailed),
            // Gone already, for a plain delete: what was asked.
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                Ok(Written::Done)
            }
            Err(e) => Err(classify(&format!("s3 DeleteObject {bucket}/{key}"), e)),
        }
    }

    async fn list(&self, bucket: &str, query: ListQuery<'_>) -> Result<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix(query.prefix.map(String::from))
            .set_start_after(query.start_after.map(String::from))
            .set_continuation_token(query.continuation.map(String::from))
            .max_keys(query.max_keys.clamp(1, MAX_LIST_PAGE) as i32)
            .send()
            .await
            .map_err(|e| classify(&format!("s3 ListObjectsV2 {bucket}"), e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|object| {
                Some(ListedObject {
                    key: object.key()?.to_string(),
                    etag: object.e_tag().map(ETag::new),
                    size: object.size().and_then(|s| u64::try_from(s).ok()),
                    last_modified: object
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                })
            })
            .collect();
        let next = match out.is_truncated() {
            Some(true) => out.next_continuation_token().map(String::from),
            _ => None,
        };
        Ok(ListPage { objects, next })
    }
}
