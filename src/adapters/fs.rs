//! The `Store` on a local folder (local mode): a bucket is a subfolder of the root, a key the
//! path below it with `/` separators. ETags are a hash of the bytes (FNV-1a 64, hex), so an
//! unchanged file keeps its ETag across restarts.
//!
//! What S3 keeps beside an object (content type, cache control, user metadata) is kept in a
//! sidecar JSON under `<root>/.resizeq/meta/<bucket>/<key>.json`, so output folders hold only
//! images. The sidecar records the ETag of the bytes it describes; a file replaced behind our
//! back (the sidecar's ETag no longer matches) has no metadata, so its variants are redone.
//!
//! Writes are atomic: a hidden `*.tmp` file in the same folder, then a rename.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{
    Condition, ETag, GetOutcome, ListPage, ListQuery, ListedObject, ObjectInfo, PutObject, Store,
    Written, MAX_LIST_PAGE,
};

/// Where sidecar metadata lives, below the root.
pub const STATE_DIR: &str = ".resizeq";

/// A folder of buckets.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// Makes a conditional write's look and write one step for this process (local mode is
    /// one process; S3 does the same on its side).
    writes: Arc<Mutex<()>>,
}

/// The sidecar of one object.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Sidecar {
    /// ETag of the bytes this sidecar describes.
    etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// Whether a file or folder name is ours or not yet complete: dotfiles (our temp files, editor
/// swap files, `.resizeq`) and `*.tmp`.
pub fn is_hidden_or_partial(name: &str) -> bool {
    name.starts_with('.') || name.to_ascii_lowercase().ends_with(".tmp")
}

fn unsafe_key(what: &str, value: &str, why: &str) -> Error {
    Error::new(ErrorKind::Poison, format!("{what} {value:?} {why}"))
}

/// A bucket name that is one plain folder name (not `.resizeq`, not `..`, no separators).
pub(crate) fn check_bucket(bucket: &str) -> Result<()> {
    if bucket.is_empty()
        || bucket.starts_with('.')
        || bucket.contains(['/', '\\', '\0'])
        || Path::new(bucket).components().count() != 1
    {
        return Err(unsafe_key(
            "bucket",
            bucket,
            "is not a plain folder name in the local root",
        ));
    }
    Ok(())
}

/// The relative path of a key, refusing anything that could leave the bucket folder.
fn key_path(key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.starts_with('/') || key.contains('\0') {
        return Err(unsafe_key("key", key, "is empty, absolute or contains NUL"));
    }
    let mut path = PathBuf::new();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(unsafe_key(
                "key",
                key,
                "has an empty, `.` or `..` component",
            ));
        }
        // One normal component each (rejects `C:` prefixes and the like).
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(_)), None) => path.push(part),
            _ => return Err(unsafe_key("key", key, "is not a relative path")),
        }
    }
    Ok(path)
}

fn io_error(what: &Path, e: io::Error) -> Error {
    Error::io(format!("{}: {e}", what.display()))
}

/// Errors that mean "no such object": the file, or a folder on its way, is missing; or the
/// key names a folder, or passes through a file.
fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

/// Reads a file, `None` if it is not there.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Removes a file; one that is not there is fine.
fn remove_optional(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a hidden temp file beside it, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::io(format!("{}: no parent folder", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(io_error(path, e));
    }
    Ok(())
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> FsStore {
        FsStore {
            root: root.into(),
            writes: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of an object; an error for keys or buckets that would leave their folder.
    pub fn object_path(&self, bucket: &str, key: &str) -> Result<PathBuf> {
        check_bucket(bucket)?;
        Ok(self.root.join(bucket).join(key_path(key)?))
    }

    /// The sidecar of an object.
    pub fn meta_path(&self, bucket: &str, key: &str) -> Result<PathBuf> {
        check_bucket(bucket)?;
        let mut path = self
            .root
            .join(STATE_DIR)
            .join("meta")
            .join(bucket)
            .join(key_path(key)?);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".json");
        path.set_file_name(name);
        Ok(path)
    }

    /// The object's bytes and what a HEAD says about them, `None` if it does not exist.
    fn load(&self, bucket: &str, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let path = self.object_path(bucket, key)?;
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let etag = ETag::of_bytes(&bytes);
        let sidecar = self.sidecar(bucket, key)?.filter(|s| etag == *s.etag);
        let (content_type, metadata) = match sidecar {
            Some(s) => (s.content_type, s.metadata),
            None => (None, HashMap::new()),
        };
        let info = ObjectInfo {
            etag,
            size: bytes.len() as u64,
            content_type,
            metadata,
        };
        Ok(Some((bytes, info)))
    }

    /// The sidecar, if there is a readable one (a damaged sidecar counts as none: the variants
    /// are then redone and it is rewritten).
    fn sidecar(&self, bucket: &str, key: &str) -> Result<Option<Sidecar>> {
        let path = self.meta_path(bucket, key)?;
        Ok(read_optional(&path)?.and_then(|bytes| match serde_json::from_slice(&bytes) {
            Ok(sidecar) => Some(sidecar),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable sidecar");
                None
            }
        }))
    }

    fn get_sync(&self, bucket: &str, key: &str, if_match: Option<&ETag>) -> Result<GetOutcome> {
        Ok(match self.load(bucket, key)? {
            None => GetOutcome::NotFound,
            Some((_, info)) if if_match.is_some_and(|e| *e != info.etag) => GetOutcome::Changed,
            Some((bytes, info)) => GetOutcome::Found { bytes, info },
        })
    }

    /// The ETag of the object's current bytes, `None` if there is no object.
    fn current_etag(&self, path: &Path) -> Result<Option<ETag>> {
        Ok(read_optional(path)?.map(|bytes| ETag::of_bytes(&bytes)))
    }

    fn put_sync(&self, object: PutObject) -> Result<Written> {
        let path = self.object_path(&object.bucket, &object.key)?;
        let _one_writer = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        if object.condition != Condition::Any
            && !object.condition.holds(self.current_etag(&path)?.as_ref())
        {
            return Ok(Written::ConditionFailed);
        }
        let meta_path = self.meta_path(&object.bucket, &object.key)?;
        let sidecar = Sidecar {
            etag: ETag::of_bytes(&object.bytes).to_string(),
            content_type: Some(object.content_type),
            cache_control: object.cache_control,
            metadata: object.metadata,
        };
        let json = serde_json::to_vec_pretty(&sidecar)
            .map_err(|e| Error::io(format!("sidecar of {}: {e}", path.display())))?;
        // The image first: a crash before the sidecar leaves an image whose metadata does not
        // match, which only means it is redone.
        write_atomic(&path, &object.bytes)?;
        write_atomic(&meta_path, &json)?;
        Ok(Written::Done)
    }

    fn delete_sync(&self, bucket: &str, key: &str, condition: &Condition) -> Result<Written> {
        if *condition == Condition::Absent {
            return Err(Error::new(
                ErrorKind::Config,
                "a delete cannot be conditional on the object being absent",
            ));
        }
        let path = self.object_path(bucket, key)?;
        let _one_writer = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current_etag(&path)?;
        if current.is_none() && *condition == Condition::Any {
            return Ok(Written::Done);
        }
        if !condition.holds(current.as_ref()) {
            return Ok(Written::ConditionFailed);
        }
        remove_optional(&path)?;
        remove_optional(&self.meta_path(bucket, key)?)?;
        Ok(Written::Done)
    }
}

impl FsStore {
    fn list_sync(&self, bucket: &str, query: ListQuery<'_>) -> Result<ListPage> {
        check_bucket(bucket)?;
        let mut keys = Vec::new();
        collect_keys(&self.root.join(bucket), "", &mut keys)?;
        // As S3: a continuation token supersedes start_after (ours is the last key listed).
        let after = query.continuation.or(query.start_after).unwrap_or("");
        let prefix = query.prefix.unwrap_or("");
        keys.retain(|key| key.starts_with(prefix) && key.as_str() > after);
        keys.sort();
        let page_size = query.max_keys.clamp(1, MAX_LIST_PAGE);
        let next = (keys.len() > page_size).then(|| keys[page_size - 1].clone());
        keys.truncate(page_size);
        let mut objects = Vec::with_capacity(keys.len());
        for key in keys {
            let path = self.object_path(bucket, &key)?;
            // Gone since the walk: not listed, as S3 would not list it either.
            let Some(bytes) = read_optional(&path)? else {
                continue;
            };
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            objects.push(ListedObject {
                key,
                etag: Some(ETag::of_bytes(&bytes)),
                size: Some(bytes.len() as u64),
                last_modified: modified,
            });
        }
        Ok(ListPage { objects, next })
    }
}

/// The keys of the files below `dir` (`/`-separated, after `parent`), without our own and
/// partial files; nothing for a folder that does not exist.
fn collect_keys(dir: &Path, parent: &str, keys: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            continue; // not UTF-8: no key names it
        };
        if is_hidden_or_partial(&name) {
            continue;
        }
        let key = format!("{parent}{name}");
        let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        if kind.is_dir() {
            collect_keys(&entry.path(), &format!("{key}/"), keys)?;
        } else if kind.is_file() {
            keys.push(key);
        }
    }
    Ok(())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io(format!("file task failed: {e}")))?
}

impl Store for FsStore {
    async fn get(&self, bucket: &str, key: &str, if_match: Option<&ETag>) -> Result<GetOutcome> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let if_match = if_match.cloned();
        blocking(move || store.get_sync(&bucket, &key, if_match.as_ref())).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        blocking(move || Ok(store.load(&bucket, &key)?.map(|(_, info)| info))).await
    }

    async fn put(&self, object: PutObject) -> Result<Written> {
        let store = self.clone();
        blocking(move || store.put_sync(object)).await
    }

    async fn delete(&self, bucket: &str, key: &str, condition: &Condition) -> Result<Written> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let condition = condition.clone();
        blocking(move || store.delete_sync(&bucket, &key, &condition)).await
    }

    async fn list(&self, bucket: &str, query: ListQuery<'_>) -> Result<ListPage> {
        let (store, bucket) = (self.clone(), bucket.to_string());
        let prefix = query.prefix.map(String::from);
        let start_after = query.start_after.map(String::from);
        let continuation = query.continuation.map(String::from);
        let max_keys = query.max_keys;
        blocking(move || {
            let query = ListQuery {
                prefix: prefix.as_deref(),
                start_after: start_after.as_deref(),
                continuation: continuation.as_deref(),
                max_keys,
            };
            store.list_sync(&bucket, query)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(bucket: &str, key: &str, bytes: &[u8]) -> PutObject {
        PutObject {
            bucket: bucket.into(),
            key: key.into(),
            bytes: bytes.to_vec(),
            content_type: "image/jpeg".into(),
            cache_control: Some("max-age=60".into()),
            metadata: HashMap::from([("resizeq-source-etag".to_string(), "abc".to_string())]),
            condition: Condition::Any,
        }
    }

    #[tokio::test]
    async fn get_and_head_of_a_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("photos/a b")).unwrap();
        std::fs::write(dir.path().join("photos/a b/c.png"), b"hello").unwrap();
        let store = FsStore::new(dir.path());

        let info = store.head("photos", "a b/c.png").await.unwrap().unwrap();
        assert_eq!(info.etag, ETag::of_bytes(b"hello"));
        assert_eq!(info.size, 5);
        assert_eq!(info.content_type, None);
        assert!(info.metadata.is_empty());

        let GetOutcome::Found { bytes, info: got } =
            store.get("photos", "a b/c.png", None).await.unwrap()
        else {
            panic!("not found")
        };
        assert_eq!(bytes, b"hello");
        assert_eq!(got, info);
    }

    #[tokio::test]
    async fn missing_objects_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("photos/sub")).unwrap();
        std::fs::write(dir.path().join("photos/file"), b"x").unwrap();
        let store = FsStore::new(dir.path());
        for key in ["nope.jpg", "sub", "file/below", "deep/er/nope"] {
            assert_eq!(store.head("photos", key).await.unwrap(), None, "{key}");
            assert_eq!(
                store.get("photos", key, None).await.unwrap(),
                GetOutcome::NotFound,
                "{key}"
            );
        }
        assert_eq!(store.head("no-bucket", "k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn if_match_compares_etags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/k"), b"one").unwrap();
        let store = FsStore::new(dir.path());
        let etag = ETag::of_bytes(b"one");
        assert!(matches!(
            store.get("b", "k", Some(&etag)).await.unwrap(),
            GetOutcome::Found { .. }
        ));
        assert!(matches!(
            store
                .get("b", "k", Some(&ETag::new(&etag.quoted())))
                .await
                .unwrap(),
            GetOutcome::Found { .. }
        ));
        std::fs::write(dir.path().join("b/k"), b"two").unwrap();
        assert_eq!(
            store.get("b", "k", Some(&etag)).await.unwrap(),
            GetOutcome::Changed
        );
        assert_eq!(
            store.get("b", "gone", Some(&etag)).await.unwrap(),
            GetOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn put_writes_the_file_and_a_sidecar_outside_the_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        store
            .put(put("photos-resized", "80/a b/c.jpg.jpg", b"jpeg"))
            .await
            .unwrap();

        let file = dir.path().join("photos-resized/80/a b/c.jpg.jpg");
        assert_eq!(std::fs::read(&file).unwrap(), b"jpeg");
        // Only the image in the output folder: no temp files, no sidecars.
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.jpg.jpg"]);
        assert!(dir
            .path()
            .join(".resizeq/meta/photos-resized/80/a b/c.jpg.jpg.json")
            .is_file());

        let info = store
            .head("photos-resized", "80/a b/c.jpg.jpg")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.etag, ETag::of_bytes(b"jpeg"));
        assert_eq!(info.size, 4);
        assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(info.metadata["resizeq-source-etag"], "abc");

        // Overwriting replaces both.
        let mut again = put("photos-resized", "80/a b/c.jpg.jpg", b"jpeg2");
        again.metadata.insert("x".into(), "y".into());
        store.put(again).await.unwrap();
        let info = store
            .head("photos-resized", "80/a b/c.jpg.jpg")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.etag, ETag::of_bytes(b"jpeg2"));
        assert_eq!(info.metadata["x"], "y");
    }

    #[tokio::test]
    async fn a_file_replaced_behind_our_back_loses_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        store.put(put("out", "k.jpg", b"ours")).await.unwrap();
        std::fs::write(dir.path().join("out/k.jpg"), b"someone else's").unwrap();
        let info = store.head("out", "k.jpg").await.unwrap().unwrap();
        assert!(info.metadata.is_empty());
        assert_eq!(info.content_type, None);
    }

    #[tokio::test]
    async fn keys_and_buckets_cannot_leave_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().join("root"));
        let bad = [
            ("b", "../x"),
            ("b", "a/../../x"),
            ("b", "/etc/passwd"),
            ("b", "a//b"),
            ("b", "./a"),
            ("b", ""),
            ("..", "x"),
            (".resizeq", "meta/x"),
            ("a/b", "x"),
            ("", "x"),
        ];
        for (bucket, key) in bad {
            let e = store.head(bucket, key).await.unwrap_err();
            assert!(e.is_permanent(), "{bucket}/{key}: {e}");
            let e = store.get(bucket, key, None).await.unwrap_err();
            assert!(e.is_permanent(), "{bucket}/{key}: {e}");
            let e = store.put(put(bucket, key, b"x")).await.unwrap_err();
            assert!(e.is_permanent(), "{bucket}/{key}: {e}");
        }
        assert!(!dir.path().join("x").exists());
        // Dots inside names are fine.
        store.put(put("b", "a..b/.c", b"x")).await.unwrap();
        assert!(dir.path().join("root/b/a..b/.c").is_file());
    }

    #[tokio::test]
    async fn listing_pages_through_the_files_in_key_order_without_ours() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        for key in ["b/2.jpg", "a.jpg", "b/1.jpg", "c.png"] {
            store.put(put("photos", key, key.as_bytes())).await.unwrap();
        }
        std::fs::write(dir.path().join("photos/.partial.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("photos/upload.tmp"), b"x").unwrap();
        let query = |continuation| ListQuery {
            max_keys: 2,
            continuation,
            ..ListQuery::default()
        };
        let first = store.list("photos", query(None)).await.unwrap();
        let keys: Vec<&str> = first.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a.jpg", "b/1.jpg"]);
        assert_eq!(first.objects[0].etag, Some(ETag::of_bytes(b"a.jpg")));
        assert_eq!(first.objects[0].size, Some(5));
        assert!(first.objects[0].last_modified.is_some());
        let second = store
            .list("photos", query(first.next.as_deref()))
            .await
            .unwrap();
        let keys: Vec<&str> = second.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!((keys, second.next), (vec!["b/2.jpg", "c.png"], None));

        let b = ListQuery {
            prefix: Some("b/"),
            start_after: Some("b/1.jpg"),
            max_keys: 10,
            ..ListQuery::default()
        };
        let page = store.list("photos", b).await.unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.objects[0].key, "b/2.jpg");
        let none = store.list("not-yet", query(None)).await.unwrap();
        assert_eq!(none, ListPage::default());
        assert!(store
            .list("..", query(None))
            .await
            .unwrap_err()
            .is_permanent());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn other_io_errors_are_transient() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/k"), b"x").unwrap();
        std::fs::set_permissions(
            dir.path().join("b/k"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let store = FsStore::new(dir.path());
        let result = store.get("b", "k", None).await;
        std::fs::set_permissions(
            dir.path().join("b/k"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        // Root reads anything: then there is no error to see.
        if let Err(e) = result {
            assert_eq!(e.kind(), ErrorKind::Io, "{e}");
            assert!(!e.is_permanent());
        }
    }
}
