//! Listing segments in a lake (`s3://`, `gs://`, `az://`, `file:///` URLs given to `--data`).
//!
//! The keys below a lake URL's prefix are the local Hive layout
//! (`host=<h>/date=YYYY-MM-DD/hour=HH/<name>.parquet`, `dnsledger_schema::partition`). A LIST
//! costs a round trip and a lake holds years of many hosts, so only the partitions the scope
//! can need are listed:
//!
//! - `--host H`: only `prefix/host=<escaped H>/` (one prefix per host);
//! - `--since/--until`: the `host=` and `date=` levels are listed with a delimiter (one page of
//!   directory names each) and only the dates in range are descended into; a date the range
//!   covers only in part is listed once more to pick its `hour=` directories;
//! - no scope: the prefix is listed recursively (one paged LIST of every key).
//!
//! Directories outside the layout (a name that is not `host=`, `date=` or `hour=` where one is
//! expected) are listed recursively, and their segments placed by their footers, as locally.
//! Only `*.parquet` objects are segments; hidden names (`.x`) and `inprogress/` are never
//! entered.

use std::sync::Arc;

use dnsledger_lake::LakeUrl;
use dnsledger_lake::object_store::path::Path as ObjectPath;
use dnsledger_lake::object_store::{ObjectMeta, ObjectStore};
use dnsledger_schema::partition::{self, NS_PER_DAY, NS_PER_HOUR, PartitionKey};
use futures::{StreamExt, TryStreamExt, stream};

use crate::catalog::source::Scope;

/// At most this many LISTs at a time.
const LIST_CONCURRENCY: usize = 16;

/// Which Hive level the directories of a delimited LIST are expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `host=` directories (the lake's prefix).
    Hosts,
    /// `date=` directories (inside a `host=`).
    Dates,
    /// `hour=` directories (inside `date=` of this day, days since the epoch).
    Hours { date: i32 },
}

/// One LIST of the listing plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every key below this prefix.
    Recursive(ObjectPath),
    /// The objects and directories directly below this prefix; the directories are expected
    /// at this level.
    Delimited(ObjectPath, Level),
}

impl Step {
    pub fn prefix(&self) -> &ObjectPath {
        match self {
            Step::Recursive(p) | Step::Delimited(p, _) => p,
        }
    }
}

fn time_scoped(scope: &Scope) -> bool {
    scope.since.is_some() || scope.until.is_some()
}

/// The first LISTs for `scope`.
pub fn first_steps(lake: &LakeUrl, scope: &Scope) -> Vec<Step> {
    if scope.hosts.is_empty() {
        let root = lake.prefix().clone();
        return vec![if time_scoped(scope) {
            Step::Delimited(root, Level::Hosts)
        } else {
            Step::Recursive(root)
        }];
    }
    let mut hosts = scope.hosts.clone();
    hosts.sort();
    hosts.dedup();
    hosts
        .iter()
        .map(|h| {
            // The writer's key for this host directory: the same escaping, the same key
            // building (`LakeUrl::key`).
            let component = PartitionKey {
                host: h.clone(),
                date: 0,
                hour: 0,
            }
            .host_component();
            let dir = lake.key(&component);
            if time_scoped(scope) {
                Step::Delimited(dir, Level::Dates)
            } else {
                Step::Recursive(dir)
            }
        })
        .collect()
}

/// Whether `[start, start + len)` (ns) overlaps the scope's time range, and whether it lies
/// entirely inside it.
fn overlap(scope: &Scope, start: i64, len: i64) -> (bool, bool) {
    let end = start.saturating_add(len);
    let overlaps = scope.since.is_none_or(|s| end > s) && scope.until.is_none_or(|u| start < u);
    let inside = scope.since.is_none_or(|s| start >= s) && scope.until.is_none_or(|u| end <= u);
    (overlaps, overlaps && inside)
}

/// The name of a key's last part as the writer meant it (object_store percent-encodes some
/// bytes of the parts it builds, `%` among them; keys written by other tools have none).
pub fn part_name(path: &ObjectPath) -> Option<String> {
    Some(decode(path.filename()?))
}

/// What to do with directory `child` found by a delimited LIST at `level`: `None` to leave it
/// out (out of scope, hidden or `inprogress`).
pub fn next_step(child: &ObjectPath, level: Level, scope: &Scope) -> Option<Step> {
    let name = part_name(child)?;
    if name.starts_with('.') || name == "inprogress" {
        return None;
    }
    let step = match level {
        Level::Hosts => match partition::host_of_component(&name) {
            Some(host) if !scope.hosts.is_empty() && !scope.hosts.contains(&host) => return None,
            Some(_) => Step::Delimited(child.clone(), Level::Dates),
            None => Step::Recursive(child.clone()),
        },
        Level::Dates => match partition::date_of_component(&name) {
            Some(date) => match overlap(scope, i64::from(date) * NS_PER_DAY, NS_PER_DAY) {
                (false, _) => return None,
                (true, true) => Step::Recursive(child.clone()),
                (true, false) => Step::Delimited(child.clone(), Level::Hours { date }),
            },
            None => Step::Recursive(child.clone()),
        },
        Level::Hours { date } => match partition::hour_of_component(&name) {
            Some(hour) => {
                let start = i64::from(date) * NS_PER_DAY + i64::from(hour) * NS_PER_HOUR;
                match overlap(scope, start, NS_PER_HOUR) {
                    (false, _) => return None,
                    (true, _) => Step::Recursive(child.clone()),
                }
            }
            None => Step::Recursive(child.clone()),
        },
    };
    Some(step)
}

/// Whether an object below the lake's prefix is a segment to read: `*.parquet`, not hidden,
/// not below a hidden or `inprogress` directory.
pub fn is_segment_key(lake: &LakeUrl, key: &ObjectPath) -> bool {
    let Some(rest) = key.prefix_match(lake.prefix()) else {
        return false;
    };
    let parts: Vec<String> = rest.map(|p| decode(p.as_ref())).collect();
    let Some((file, dirs)) = parts.split_last() else {
        return false;
    };
    file.ends_with(".parquet")
        && !file.starts_with('.')
        && !dirs.iter().any(|d| d.starts_with('.') || d == "inprogress")
}

/// Whether an object below the lake's prefix is a date manifest (`dnsledger_lake::manifest`),
/// not below a hidden or `inprogress` directory.
pub fn is_manifest_key(lake: &LakeUrl, key: &ObjectPath) -> bool {
    let Some(rest) = key.prefix_match(lake.prefix()) else {
        return false;
    };
    let parts: Vec<String> = rest.map(|p| decode(p.as_ref())).collect();
    let Some((file, dirs)) = parts.split_last() else {
        return false;
    };
    file == dnsledger_lake::manifest::FILE_NAME
        && !dirs.iter().any(|d| d.starts_with('.') || d == "inprogress")
}

/// The partition of a segment key from its `host=/date=/hour=` directories (the nearest of
/// each above the object, as `PartitionKey::from_path` reads local paths), if it has them.
pub fn key_of(lake: &LakeUrl, key: &ObjectPath) -> Option<PartitionKey> {
    let parts: Vec<String> = key
        .prefix_match(lake.prefix())?
        .map(|p| decode(p.as_ref()))
        .collect();
    let (_, dirs) = parts.split_last()?;
    let (mut host, mut date, mut hour) = (None, None, None);
    for d in dirs {
        if d.starts_with("host=") {
            host = partition::host_of_component(d);
        } else if d.starts_with("date=") {
            date = partition::date_of_component(d);
        } else if d.starts_with("hour=") {
            hour = partition::hour_of_component(d);
        }
    }
    Some(PartitionKey {
        host: host?,
        date: date?,
        hour: hour?,
    })
}

/// A key part as the writer meant it (see [`part_name`]).
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// A LIST that failed: the URL listed, the innermost cause (object_store's messages repeat
/// their whole chain), and object_store's error (for its kind).
#[derive(Debug, thiserror::Error)]
#[error("cannot list {url}: {cause}")]
pub struct ListError {
    pub url: String,
    pub cause: String,
    /// The store's error code (`NoSuchBucket`, `AccessDenied`, …) when it sent one.
    pub code: Option<String>,
    pub error: dnsledger_lake::object_store::Error,
}

impl ListError {
    fn new(url: String, error: dnsledger_lake::object_store::Error) -> Self {
        let mut innermost: &dyn std::error::Error = &error;
        while let Some(next) = innermost.source() {
            innermost = next;
        }
        let text = match &error {
            // The kinds a user acts on are clearer in object_store's own words.
            dnsledger_lake::object_store::Error::NotFound { .. }
            | dnsledger_lake::object_store::Error::PermissionDenied { .. }
            | dnsledger_lake::object_store::Error::Unauthenticated { .. } => error.to_string(),
            _ => innermost.to_string(),
        };
        let code = xml_element(&text, "Code");
        // An S3-style XML error body: its code and message, not the XML.
        let cause = match (&code, xml_element(&text, "Message")) {
            (Some(code), message) => {
                // "Server returned non-2xx status code: 404 Not Found: <?xml …"
                let head = text
                    .split_once("status code: ")
                    .and_then(|(_, t)| t.split(':').next())
                    .unwrap_or("error");
                match message {
                    Some(m) => format!("HTTP {head}: {code} ({m})"),
                    None => format!("HTTP {head}: {code}"),
                }
            }
            (None, _) => text,
        };
        ListError {
            url,
            cause,
            code,
            error,
        }
    }
}

/// The text of the first `<name>…</name>` in `text`.
fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].to_owned())
}

/// The URL of a prefix, with a trailing `/` (it names a directory).
pub fn prefix_url(lake: &LakeUrl, prefix: &ObjectPath) -> String {
    let url = lake.url_of(prefix);
    if url.ends_with('/') {
        url
    } else {
        format!("{url}/")
    }
}

/// Lists the segment objects (and date manifests) of `lake` that `scope` can need. `log` is told each LIST
/// (`list <url> (delimited|recursive)`), for `--verbose`.
pub async fn list(
    lake: &LakeUrl,
    store: &Arc<dyn ObjectStore>,
    scope: &Scope,
    log: &(dyn Fn(String) + Sync),
) -> Result<Vec<ObjectMeta>, ListError> {
    let mut steps = first_steps(lake, scope);
    let mut objects = Vec::new();
    while !steps.is_empty() {
        for s in &steps {
            let kind = match s {
                Step::Recursive(_) => "recursive",
                Step::Delimited(..) => "delimited",
            };
            log(format!("list {} ({kind})", prefix_url(lake, s.prefix())));
        }
        let results: Vec<(Vec<ObjectMeta>, Vec<Step>)> = stream::iter(steps)
            .map(|step| run_step(lake, store, scope, step))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        steps = Vec::new();
        for (found, next) in results {
            objects.extend(found);
            steps.extend(next);
        }
    }
    objects.retain(|o| is_segment_key(lake, &o.location) || is_manifest_key(lake, &o.location));
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    objects.dedup_by(|a, b| a.location == b.location);
    Ok(objects)
}

async fn run_step(
    lake: &LakeUrl,
    store: &Arc<dyn ObjectStore>,
    scope: &Scope,
    step: Step,
) -> Result<(Vec<ObjectMeta>, Vec<Step>), ListError> {
    let err = |prefix: &ObjectPath| {
        let url = prefix_url(lake, prefix);
        move |error| ListError::new(url, error)
    };
    match step {
        Step::Recursive(prefix) => {
            let objects = store
                .list(Some(&prefix))
                .try_collect::<Vec<_>>()
                .await
                .map_err(err(&prefix))?;
            Ok((objects, Vec::new()))
        }
        Step::Delimited(prefix, level) => {
            let listed = store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(err(&prefix))?;
            let next = listed
                .common_prefixes
                .iter()
                .filter_map(|child| next_step(child, level, scope))
                .collect();
            Ok((listed.objects, next))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use dnsledger_lake::object_store::memory::InMemory;
    use dnsledger_lake::object_store::{ObjectStoreExt, PutPayload};
    use std::sync::Mutex;

    fn lake() -> LakeUrl {
        "s3://b/fleet".parse().expect("lake url")
    }

    fn ts(s: &str) -> i64 {
        crate::catalog::segments::parse_ts(s).expect("timestamp")
    }

    fn path(s: &str) -> ObjectPath {
        ObjectPath::parse(s).expect("path")
    }

    #[test]
    fn hosts_list_only_their_directories() {
        let scope = Scope {
            hosts: vec!["web-2".into(), "a/b".into(), "web-2".into()],
            ..Default::default()
        };
        assert_eq!(
            first_steps(&lake(), &scope),
            vec![
                Step::Recursive(lake().key("host=a%2Fb")),
                Step::Recursive(path("fleet/host=web-2")),
            ]
        );
        let timed = Scope {
            since: Some(ts("2024-05-01T00:00:00Z")),
            ..scope
        };
        assert_eq!(
            first_steps(&lake(), &timed)[1],
            Step::Delimited(path("fleet/host=web-2"), Level::Dates)
        );
        assert_eq!(
            first_steps(&lake(), &Scope::default()),
            vec![Step::Recursive(path("fleet"))]
        );
        assert_eq!(
            first_steps(
                &lake(),
                &Scope {
                    until: Some(1),
                    ..Default::default()
                }
            ),
            vec![Step::Delimited(path("fleet"), Level::Hosts)]
        );
    }

    #[test]
    fn time_range_descends_only_into_dates_and_hours_in_range() {
        // 2024-05-01T22:30 .. 2024-05-03T01:00 (exclusive).
        let scope = Scope {
            since: Some(ts("2024-05-01T22:30:00Z")),
            until: Some(ts("2024-05-03T01:00:00Z")),
            hosts: vec![],
        };
        let d = |s: &str| path(&format!("fleet/host=a/date={s}"));
        assert_eq!(next_step(&d("2024-04-30"), Level::Dates, &scope), None);
        let may1 = partition::date_of_component("date=2024-05-01").expect("date");
        assert_eq!(
            next_step(&d("2024-05-01"), Level::Dates, &scope),
            Some(Step::Delimited(
                d("2024-05-01"),
                Level::Hours { date: may1 }
            ))
        );
        // Wholly inside: everything below, in one recursive LIST.
        assert_eq!(
            next_step(&d("2024-05-02"), Level::Dates, &scope),
            Some(Step::Recursive(d("2024-05-02")))
        );
        let may3 = partition::date_of_component("date=2024-05-03").expect("date");
        assert_eq!(
            next_step(&d("2024-05-03"), Level::Dates, &scope),
            Some(Step::Delimited(
                d("2024-05-03"),
                Level::Hours { date: may3 }
            ))
        );
        assert_eq!(next_step(&d("2024-05-04"), Level::Dates, &scope), None);
        let h = |day: &str, hh: &str| path(&format!("fleet/host=a/date={day}/hour={hh}"));
        let hours = Level::Hours { date: may1 };
        assert_eq!(next_step(&h("2024-05-01", "21"), hours, &scope), None);
        assert_eq!(
            next_step(&h("2024-05-01", "22"), hours, &scope),
            Some(Step::Recursive(h("2024-05-01", "22")))
        );
        let hours = Level::Hours { date: may3 };
        assert_eq!(
            next_step(&h("2024-05-03", "00"), hours, &scope),
            Some(Step::Recursive(h("2024-05-03", "00")))
        );
        assert_eq!(next_step(&h("2024-05-03", "01"), hours, &scope), None);
        // Outside the layout: listed whole, placed by footers later.
        assert_eq!(
            next_step(&path("fleet/host=a/old"), Level::Dates, &scope),
            Some(Step::Recursive(path("fleet/host=a/old")))
        );
        assert_eq!(
            next_step(&path("fleet/inprogress"), Level::Hosts, &scope),
            None
        );
        assert_eq!(next_step(&path("fleet/.tmp"), Level::Hosts, &scope), None);
    }

    #[test]
    fn s3_error_bodies_are_summarised() {
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n\
                    <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not \
                    exist</Message><RequestId>x</RequestId></Error>";
        let e = ListError::new(
            "s3://b/p/".into(),
            dnsledger_lake::object_store::Error::Generic {
                store: "S3",
                source: body.into(),
            },
        );
        assert_eq!(e.code.as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            e.to_string(),
            "cannot list s3://b/p/: HTTP 404 Not Found: NoSuchBucket (The specified bucket does \
             not exist)"
        );
    }

    #[test]
    fn keys_and_segment_names() {
        let l = lake();
        let k = l.key("host=a%2Fb/date=2024-05-01/hour=07/x.parquet");
        assert_eq!(
            key_of(&l, &k),
            Some(PartitionKey {
                host: "a/b".into(),
                date: partition::date_of_component("date=2024-05-01").expect("date"),
                hour: 7
            })
        );
        // A key written by another tool (no object_store encoding) reads the same.
        let raw = path("fleet/host=a%2Fb/date=2024-05-01/hour=07/x.parquet");
        assert_eq!(key_of(&l, &raw), key_of(&l, &k));
        assert!(is_segment_key(&l, &k));
        assert!(!is_segment_key(&l, &path("fleet/host=a/x.parquet.tmp")));
        assert!(!is_segment_key(&l, &path("fleet/host=a/.x.parquet")));
        assert!(!is_segment_key(&l, &path("fleet/inprogress/x.parquet")));
        assert!(!is_segment_key(&l, &path("other/x.parquet")));
    }

    /// The real listing over an in-memory store: the LISTs made and the objects found.
    #[tokio::test]
    async fn listing_lists_only_what_the_scope_needs() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let keys = [
            "fleet/host=a/date=2024-05-01/hour=07/1.parquet",
            "fleet/host=a/date=2024-05-01/hour=08/2.parquet",
            "fleet/host=a/date=2024-05-02/hour=00/3.parquet",
            "fleet/host=a/date=2024-05-02/hour=00/notes.txt",
            "fleet/host=b/date=2024-05-01/hour=08/4.parquet",
            "fleet/host=b/inprogress/5.parquet",
            "fleet/loose.parquet",
        ];
        for k in keys {
            store
                .put(&path(k), PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        let l = lake();
        let run = |scope: Scope| {
            let store = store.clone();
            let l = l.clone();
            async move {
                let lists = Mutex::new(Vec::new());
                let log = |s: String| lists.lock().expect("lock").push(s);
                let found = list(&l, &store, &scope, &log).await.expect("list");
                let names: Vec<String> = found.iter().map(|o| o.location.to_string()).collect();
                (names, lists.into_inner().expect("lock"))
            }
        };
        let (all, lists) = run(Scope::default()).await;
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(lists, ["list s3://b/fleet/ (recursive)"]);

        let (found, lists) = run(Scope {
            hosts: vec!["a".into()],
            since: Some(ts("2024-05-01T08:00:00Z")),
            until: None,
        })
        .await;
        assert_eq!(
            found,
            [
                "fleet/host=a/date=2024-05-01/hour=08/2.parquet",
                "fleet/host=a/date=2024-05-02/hour=00/3.parquet"
            ]
        );
        assert_eq!(
            lists,
            [
                "list s3://b/fleet/host=a/ (delimited)",
                "list s3://b/fleet/host=a/date=2024-05-01/ (delimited)",
                "list s3://b/fleet/host=a/date=2024-05-02/ (recursive)",
                "list s3://b/fleet/host=a/date=2024-05-01/hour=08/ (recursive)",
            ]
        );
        let (found, _) = run(Scope {
            hosts: vec![],
            since: None,
            until: Some(ts("2024-05-01T08:00:00Z")),
        })
        .await;
        assert_eq!(
            found,
            [
                "fleet/host=a/date=2024-05-01/hour=07/1.parquet",
                "fleet/loose.parquet"
            ]
        );
    }
}
