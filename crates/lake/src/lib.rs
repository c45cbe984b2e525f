//! Where segments live beyond the host: a *lake URL* names an object store and a key prefix.
//!
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` (also `azure://`,
//! `abfs://`, `abfss://`) and `file:///absolute/path` are accepted. Credentials and endpoints
//! come the standard way of each cloud, through `object_store`'s `from_env` builders: for S3
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_ALLOW_HTTP=true` for a plain-http endpoint, and
//! instance metadata / web identity where `object_store` supports them; for GCS
//! `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS`; for Azure `AZURE_STORAGE_*`.
//!
//! Keys below the prefix are the local hive layout (`host=…/date=…/hour=…/<file>.parquet`), so
//! the recorder's shipper, `dnsql` and other lake engines agree on where a segment is.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use object_store;

pub mod manifest;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

/// The kind of store a lake URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    S3,
    Gcs,
    Azure,
    File,
}

impl Scheme {
    /// The schemes a user may write, for error messages and `--help`.
    pub const ACCEPTED: &'static str = "s3://, gs://, az://, file://";
}

/// Why a lake URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The scheme is not one we ship to or read from (the CLIs exit 2 for this).
    #[error("unknown lake URL scheme {scheme:?} in {url:?}\nhint: use one of {accepted}", accepted = Scheme::ACCEPTED)]
    UnknownScheme { scheme: String, url: String },
    /// The text is not a URL at all, or lacks a bucket / an absolute path.
    #[error(
        "invalid lake URL {url:?}: {reason}\nhint: e.g. s3://bucket/prefix or file:///srv/lake"
    )]
    Invalid { url: String, reason: String },
    /// The store could not be configured (missing region, bad credentials file, …).
    #[error("cannot open {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// A parsed lake URL: the store kind, the URL of the store's root (`s3://bucket`) and the key
/// prefix inside it (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeUrl {
    scheme: Scheme,
    /// As the user wrote it (trailing slashes dropped), for messages.
    text: String,
    /// `s3://bucket`, `gs://bucket`, `az://container`, `file:///`: what DataFusion registers a
    /// store under.
    root: Url,
    prefix: ObjectPath,
}

/// Whether `arg` looks like a URL (has a scheme) rather than a local path or glob.
pub fn looks_like_url(arg: &str) -> bool {
    match arg.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

impl FromStr for LakeUrl {
    type Err = LakeError;

    fn from_str(text: &str) -> Result<Self, LakeError> {
        let trimmed = text.trim_end_matches('/');
        let invalid = |reason: &str| LakeError::Invalid {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let (scheme_text, _) = trimmed
            .split_once("://")
            .ok_or_else(|| invalid("no scheme (expected scheme://…)"))?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "az" | "azure" | "abfs" | "abfss" => Scheme::Azure,
            "file" => Scheme::File,
            other => {
                return Err(LakeError::UnknownScheme {
                    scheme: other.to_string(),
                    url: text.to_string(),
                });
            }
        };
        // `file:///` with nothing after it would make the root the prefix; keep the slash.
        let parse_text = if scheme == Scheme::File && trimmed.len() <= "file://".len() {
            "file:///"
        } else {
            trimmed
        };
        let url = Url::parse(parse_text).map_err(|e| invalid(&e.to_string()))?;
        let (root, prefix) = match scheme {
            Scheme::File => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(invalid(
                        "file:// URLs must be absolute paths with no host (file:///srv/lake)",
                    ));
                }
                let prefix =
                    ObjectPath::from_url_path(url.path()).map_err(|e| invalid(&e.to_string()))?;
                let root = Url::parse("file:///").map_err(|e| invalid(&e.to_string()))?;
                (root, prefix)
            }
            Scheme::S3 | Scheme::Gcs | Scheme::Azure => {
                let bucket = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| invalid("no bucket or container name"))?;
                let root = Url::parse(&format!("{}://{bucket}", url.scheme()))
                    .map_err(|e| invalid(&e.to_string()))?;
                let prefix =
                    ObjectPath::from_url_path(url.path()).map_err(|e| invalid(&e.to_string()))?;
                (root, prefix)
            }
        };
        Ok(LakeUrl {
            scheme,
            text: trimmed.to_string(),
            root,
            prefix,
        })
    }
}

impl fmt::Display for LakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl LakeUrl {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The store's root URL (`s3://bucket`, `file:///`): the key DataFusion registers it under.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The key prefix inside the store (empty for a bucket's root).
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    /// The key of `relative` (a `/`-separated path such as `host=a/date=…/x.parquet`) below the
    /// prefix.
    pub fn key(&self, relative: &str) -> ObjectPath {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        ObjectPath::from_iter(parts)
    }

    /// The full URL of `key` (for messages and for DataFusion, which addresses files by URL).
    pub fn url_of(&self, key: &ObjectPath) -> String {
        let root = self.root.as_str();
        if root.ends_with('/') {
            format!("{root}{key}")
        } else {
            format!("{root}/{key}")
        }
    }

    /// Opens the store with the environment's credentials and `retry` (object_store's own
    /// retries with exponential backoff for 5xx, timeouts and connection errors).
    pub fn open_with(
        &self,
        retry: RetryConfig,
        client: ClientOptions,
    ) -> Result<Arc<dyn ObjectStore>, LakeError> {
        let err = |source| LakeError::Open {
            url: self.text.clone(),
            source,
        };
        let root = self.root.as_str();
        // `with_client_options` replaces the client settings `from_env` read (AWS_ALLOW_HTTP,
        // proxies, timeouts): carry those over onto `client` first.
        let store: Arc<dyn ObjectStore> = match self.scheme {
            Scheme::S3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let b = AmazonS3Builder::from_env().with_url(root);
                let client = with_env_client(client, |k| {
                    b.get_config_value(&AmazonS3ConfigKey::Client(k))
                });
                Arc::new(
                    b.with_retry(retry)
                        .with_client_options(client)
                        .build()
                        .map_err(err)?,
                )
            }
            Scheme::Gcs => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let b = GoogleCloudStorageBuilder::from_env().with_url(root);
                let client =
                    with_env_client(client, |k| b.get_config_value(&GoogleConfigKey::Client(k)));
                Arc::new(
                    b.with_retry(retry)
                        .with_client_options(client)
                        .build()
                        .map_err(err)?,
                )
            }
            Scheme::Azure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let b = MicrosoftAzureBuilder::from_env().with_url(root);
                let client =
                    with_env_client(client, |k| b.get_config_value(&AzureConfigKey::Client(k)));
                Arc::new(
                    b.with_retry(retry)
                        .with_client_options(client)
                        .build()
                        .map_err(err)?,
                )
            }
            Scheme::File => Arc::new(object_store::local::LocalFileSystem::new()),
        };
        Ok(store)
    }

    /// Opens the store with object_store's default retries and client options.
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>, LakeError> {
        self.open_with(RetryConfig::default(), ClientOptions::default())
    }
}

/// Every client setting a builder may have read from the environment.
const CLIENT_KEYS: [ClientConfigKey; 18] = [
    ClientConfigKey::AllowHttp,
    ClientConfigKey::AllowInvalidCertificates,
    ClientConfigKey::ConnectTimeout,
    ClientConfigKey::DefaultContentType,
    ClientConfigKey::Http1Only,
    ClientConfigKey::Http2KeepAliveInterval,
    ClientConfigKey::Http2KeepAliveTimeout,
    ClientConfigKey::Http2KeepAliveWhileIdle,
    ClientConfigKey::Http2MaxFrameSize,
    ClientConfigKey::Http2Only,
    ClientConfigKey::PoolIdleTimeout,
    ClientConfigKey::PoolMaxIdlePerHost,
    ClientConfigKey::ProxyUrl,
    ClientConfigKey::ProxyCaCertificate,
    ClientConfigKey::ProxyExcludes,
    ClientConfigKey::RandomizeAddresses,
    ClientConfigKey::Timeout,
    ClientConfigKey::UserAgent,
];

/// `client` with every setting the environment gave the builder (`env(key)`, where it differs
/// from the default) applied on top: the environment is the user's word.
fn with_env_client(
    client: ClientOptions,
    env: impl Fn(ClientConfigKey) -> Option<String>,
) -> ClientOptions {
    let defaults = ClientOptions::default();
    CLIENT_KEYS.iter().fold(client, |c, &k| match env(k) {
        Some(v) if Some(&v) != defaults.get_config_value(&k).as_ref() => c.with_config(k, v),
        _ => c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LakeUrl {
        match s.parse() {
            Ok(u) => u,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn s3_bucket_and_prefix() {
        let u = parse("s3://lake/dns/fleet/");
        assert_eq!(u.scheme(), Scheme::S3);
        assert_eq!(u.root().as_str(), "s3://lake");
        assert_eq!(u.prefix().as_ref(), "dns/fleet");
        let k = u.key("host=a/date=2026-12-04/hour=07/x.parquet");
        assert_eq!(
            k.as_ref(),
            "dns/fleet/host=a/date=2026-12-04/hour=07/x.parquet"
        );
        assert_eq!(
            u.url_of(&k),
            "s3://lake/dns/fleet/host=a/date=2026-12-04/hour=07/x.parquet"
        );
        assert_eq!(u.to_string(), "s3://lake/dns/fleet");
    }

    #[test]
    fn bucket_root_has_empty_prefix() {
        let u = parse("gs://bucket");
        assert_eq!(u.scheme(), Scheme::Gcs);
        assert_eq!(u.prefix().as_ref(), "");
        assert_eq!(u.key("host=a/x.parquet").as_ref(), "host=a/x.parquet");
        assert_eq!(parse("az://c/p").scheme(), Scheme::Azure);
    }

    #[test]
    fn file_urls_are_absolute_paths() {
        let u = parse("file:///srv/lake");
        assert_eq!(u.scheme(), Scheme::File);
        assert_eq!(u.root().as_str(), "file:///");
        assert_eq!(u.prefix().as_ref(), "srv/lake");
        assert_eq!(
            u.url_of(&u.key("host=a/x.parquet")),
            "file:///srv/lake/host=a/x.parquet"
        );
        assert!("file://otherhost/srv".parse::<LakeUrl>().is_err());
    }

    #[test]
    fn unknown_scheme_is_named() {
        match "ftp://x/y".parse::<LakeUrl>() {
            Err(LakeError::UnknownScheme { scheme, .. }) => assert_eq!(scheme, "ftp"),
            other => panic!("expected UnknownScheme, got {other:?}"),
        }
        assert!(matches!(
            "s3:///nobucket".parse::<LakeUrl>(),
            Err(LakeError::Invalid { .. })
        ));
    }

    #[test]
    fn url_detection() {
        assert!(looks_like_url("s3://b/p"));
        assert!(looks_like_url("file:///srv"));
        assert!(!looks_like_url("/var/lib/dnsledger"));
        assert!(!looks_like_url("data/host=*/date=*"));
    }

    #[test]
    fn environment_client_settings_survive_custom_options() {
        let custom = ClientOptions::default().with_timeout(std::time::Duration::from_secs(7));
        let merged = with_env_client(custom, |k| match k {
            ClientConfigKey::AllowHttp => Some("true".into()),
            ClientConfigKey::Http2Only => Some("false".into()),
            _ => None,
        });
        let get = |k| merged.get_config_value(&k);
        assert_eq!(get(ClientConfigKey::AllowHttp).as_deref(), Some("true"));
        assert_eq!(get(ClientConfigKey::Timeout).as_deref(), Some("7s"));
    }

    #[test]
    fn local_store_opens() {
        assert!(parse("file:///tmp").open().is_ok());
    }
}
