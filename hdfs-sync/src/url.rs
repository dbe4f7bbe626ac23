//! `StorageUrl`: the one way this crate names a file or directory, whatever the backend.
//! Parses `file:///abs`, Flink's own `file:/abs` spelling, `hdfs://ns/path` and `viewfs://ns/path`.

use std::fmt;

use crate::error::SyncError;

/// Which backend a URL addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scheme {
    File,
    Hdfs,
    Viewfs,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::File => "file",
            Scheme::Hdfs => "hdfs",
            Scheme::Viewfs => "viewfs",
        }
    }
}

/// A parsed storage location: scheme, authority (nameservice or `host:port`, empty for local
/// files) and an absolute, normalised path without a trailing slash (except the root `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageUrl {
    scheme_name: String,
    authority: String,
    path: String,
}

impl StorageUrl {
    /// Parses a URL, naming the input in the error when it is not one this crate can address.
    pub fn parse(input: &str) -> Result<Self, SyncError> {
        let bad = |reason: &str| SyncError::InvalidUrl {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = input
            .split_once(':')
            .ok_or_else(|| bad("expected a scheme such as file://, hdfs:// or viewfs://"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "file" => Scheme::File,
            "hdfs" => Scheme::Hdfs,
            "viewfs" => Scheme::Viewfs,
            other => {
                return Err(bad(&format!(
                    "unsupported scheme `{other}` (supported: file, hdfs, viewfs)"
                )));
            }
        };
        let (authority, path) = if let Some(after) = rest.strip_prefix("//") {
            match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, "/"),
            }
        } else {
            // Flink prints local paths as `file:/tmp/x` (java.net.URI without authority).
            ("", rest)
        };
        if !path.starts_with('/') {
            return Err(bad("the path must be absolute"));
        }
        if scheme == Scheme::File && !authority.is_empty() && authority != "localhost" {
            return Err(bad("file URLs take no host: use file:///absolute/path"));
        }
        if scheme != Scheme::File && authority.is_empty() {
            return Err(bad(
                "hdfs and viewfs URLs need a nameservice or host: hdfs://ns/path",
            ));
        }
        let authority = if scheme == Scheme::File {
            ""
        } else {
            authority
        };
        let path =
            normalise(path).ok_or_else(|| bad("the path may not climb above / with `..`"))?;
        Ok(Self {
            scheme_name: scheme.as_str().to_string(),
            authority: authority.to_string(),
            path,
        })
    }

    /// A local-filesystem URL for an absolute path.
    pub fn local(path: &std::path::Path) -> Result<Self, SyncError> {
        let text = path.to_str().ok_or_else(|| SyncError::InvalidUrl {
            url: path.display().to_string(),
            reason: "the path is not valid UTF-8".to_string(),
        })?;
        Self::parse(&format!("file://{text}"))
    }

    pub fn scheme(&self) -> Scheme {
        match self.scheme_name.as_str() {
            "hdfs" => Scheme::Hdfs,
            "viewfs" => Scheme::Viewfs,
            _ => Scheme::File,
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The absolute path inside the filesystem (what hdfs-native and `std::fs` take).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The last path component (empty for the root).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    pub fn parent(&self) -> Option<StorageUrl> {
        if self.path == "/" {
            return None;
        }
        let cut = self.path.rfind('/').unwrap_or(0);
        let parent = if cut == 0 { "/" } else { &self.path[..cut] };
        Some(self.with_path(parent.to_string()))
    }

    /// Appends a relative path (`a/b`); `..` that would leave this URL is refused.
    pub fn join(&self, relative: &str) -> Result<StorageUrl, SyncError> {
        let joined = format!("{}/{}", self.path.trim_end_matches('/'), relative);
        let path = normalise(&joined).ok_or_else(|| SyncError::InvalidUrl {
            url: format!("{self} + {relative}"),
            reason: "the relative path climbs above /".to_string(),
        })?;
        let url = self.with_path(path);
        if !url.starts_with(self) {
            return Err(SyncError::InvalidUrl {
                url: format!("{self} + {relative}"),
                reason: "the relative path leaves the base directory".to_string(),
            });
        }
        Ok(url)
    }

    /// True when `self` is `base` or lies below it (same scheme and authority).
    pub fn starts_with(&self, base: &StorageUrl) -> bool {
        self.scheme_name == base.scheme_name
            && self.authority == base.authority
            && (self.path == base.path
                || base.path == "/"
                || self
                    .path
                    .strip_prefix(&base.path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// The path of `self` relative to `base` (`None` when it is not below `base`).
    pub fn relative_to(&self, base: &StorageUrl) -> Option<String> {
        if !self.starts_with(base) {
            return None;
        }
        let rest = self.path.strip_prefix(&base.path).unwrap_or("");
        Some(rest.trim_start_matches('/').to_string())
    }

    /// The spelling Flink itself writes for this location: `file:/abs` for local files
    /// (what `org.apache.flink.core.fs.Path#toString` prints) and `hdfs://ns/abs` otherwise.
    pub fn to_flink_string(&self) -> String {
        match self.scheme() {
            Scheme::File => format!("file:{}", self.path),
            _ => self.to_string(),
        }
    }

    fn with_path(&self, path: String) -> StorageUrl {
        StorageUrl {
            scheme_name: self.scheme_name.clone(),
            authority: self.authority.clone(),
            path,
        }
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme_name, self.authority, self.path)
    }
}

impl std::str::FromStr for StorageUrl {
    type Err = SyncError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for StorageUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for StorageUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StorageUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Collapses `//`, `.` and `..`; `None` when `..` climbs above the root.
fn normalise(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls_parse_in_both_spellings_flink_and_rfc() {
        let rfc = StorageUrl::parse("file:///tmp/ckpt/").unwrap();
        let flink = StorageUrl::parse("file:/tmp/ckpt").unwrap();
        assert_eq!(rfc, flink);
        assert_eq!(rfc.path(), "/tmp/ckpt");
        assert_eq!(rfc.to_string(), "file:///tmp/ckpt");
        assert_eq!(rfc.to_flink_string(), "file:/tmp/ckpt");
    }

    #[test]
    fn hdfs_urls_keep_their_nameservice() {
        let url = StorageUrl::parse("hdfs://ns-a/flink//ckpt/./job").unwrap();
        assert_eq!(url.scheme(), Scheme::Hdfs);
        assert_eq!(url.authority(), "ns-a");
        assert_eq!(url.path(), "/flink/ckpt/job");
        assert_eq!(url.to_flink_string(), "hdfs://ns-a/flink/ckpt/job");
    }

    #[test]
    fn bad_urls_are_refused_with_the_input_named() {
        for bad in [
            "s3://b/k",
            "relative/path",
            "hdfs:///no-ns",
            "file://host/x",
            "file:/a/../../x",
        ] {
            let err = StorageUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn join_refuses_to_leave_the_base() {
        let base = StorageUrl::parse("hdfs://ns/a/b").unwrap();
        assert_eq!(base.join("c/d").unwrap().path(), "/a/b/c/d");
        assert!(base.join("../x").is_err());
        let child = base.join("c/d").unwrap();
        assert_eq!(child.relative_to(&base).as_deref(), Some("c/d"));
        assert_eq!(child.parent().unwrap().path(), "/a/b/c");
        let sibling = StorageUrl::parse("hdfs://ns/a/bc").unwrap();
        assert!(!sibling.starts_with(&base));
    }
}
