//! The matchers policy scopes are written in: name globs, namespace label selectors, and
//! image patterns on normalised references. Pure functions over strings, shared by
//! admission, `check`, `audit` and `replay`.

use std::collections::BTreeMap;

use super::{LabelOperator, LabelSelector};

/// `*` matches any run of characters, `?` any one; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// True when `patterns` is empty (no restriction) or any pattern matches.
pub fn any_glob(patterns: &[String], text: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob(p, text))
}

impl LabelSelector {
    /// Kubernetes semantics: every `matchLabels` pair and every expression must hold.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    LabelOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// An image reference split the way registries read it, with Docker's implicit parts filled
/// in: `nginx` is `docker.io/library/nginx`, and no tag and no digest means `latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> Self {
        let mut r = Self::split(image);
        r.repository = normalise_repository(&r.repository);
        r
    }

    /// Name, tag and digest as written, nothing filled in.
    fn split(image: &str) -> Self {
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d.to_owned())),
            None => (image, None),
        };
        // A colon after the last slash is a tag; one before it is a registry port.
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(name[slash + i + 1..].to_owned())),
            None => (name, None),
        };
        Self {
            repository: name.to_owned(),
            tag,
            digest,
        }
    }
}

fn normalise_repository(name: &str) -> String {
    // The first component is a registry only if it looks like a host (Docker's own rule).
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if domain == "docker.io" && !path.contains('/') {
        format!("docker.io/library/{path}")
    } else {
        format!("{domain}/{path}")
    }
}

/// Does the image pattern `pattern` match `image`? Both are normalised; the pattern's
/// repository, tag and digest are globs, and a part the pattern leaves out matches anything.
/// A pattern starting with `*` is not normalised, so `*` matches every image and
/// `*/acme/*` every registry's `acme` images.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    let p = if pattern.starts_with('*') {
        ImageRef::split(pattern)
    } else {
        ImageRef::parse(pattern)
    };
    let i = ImageRef::parse(image);
    let tag = i
        .tag
        .as_deref()
        .unwrap_or(if i.digest.is_none() { "latest" } else { "" });
    glob(&p.repository, &i.repository)
        && p.tag.as_deref().is_none_or(|t| glob(t, tag))
        && p.digest
            .as_deref()
            .is_none_or(|d| i.digest.as_deref().is_some_and(|id| glob(d, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("team-*", "team-a"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(glob("*-prod", "shop-prod"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("team-*", "teams"));
        assert!(!glob("a*b", "ab-c"));
        assert!(!glob("abc", "abcd"));
    }

    #[test]
    fn images_are_normalised() {
        let r = ImageRef::parse("nginx");
        assert_eq!(r.repository, "docker.io/library/nginx");
        assert_eq!(r.tag, None);
        assert_eq!(
            ImageRef::parse("bitnami/redis:7").repository,
            "docker.io/bitnami/redis"
        );
        let r = ImageRef::parse("registry.local:5000/team/app:1.2@sha256:abc");
        assert_eq!(r.repository, "registry.local:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(
            ImageRef::parse("docker.io/nginx:1").repository,
            "docker.io/library/nginx"
        );
        assert_eq!(
            ImageRef::parse("index.docker.io/library/nginx").repository,
            "docker.io/library/nginx"
        );
        assert_eq!(ImageRef::parse("localhost/app").repository, "localhost/app");
    }

    #[test]
    fn image_patterns() {
        assert!(image_matches("nginx", "docker.io/library/nginx:1.27"));
        assert!(image_matches("docker.io/library/nginx", "nginx@sha256:ff"));
        assert!(image_matches("nginx:1.*", "nginx:1.27"));
        assert!(!image_matches("nginx:1.*", "nginx:2.0"));
        assert!(image_matches("nginx:latest", "nginx"));
        assert!(!image_matches("nginx:latest", "nginx@sha256:ff"));
        assert!(image_matches("nginx@sha256:ff", "nginx:1@sha256:ff"));
        assert!(!image_matches("nginx@sha256:ff", "nginx:1"));
        assert!(image_matches("ghcr.io/acme/*", "ghcr.io/acme/legacy:3"));
        assert!(!image_matches("ghcr.io/acme/*", "ghcr.io/other/legacy:3"));
        assert!(!image_matches("nginx", "nginx-exporter"));
        assert!(image_matches("*", "ghcr.io/acme/app:1"));
        assert!(image_matches("*", "nginx"));
        assert!(image_matches("*/acme/*", "ghcr.io/acme/app@sha256:ff"));
        assert!(!image_matches("*/acme/*", "ghcr.io/other/app"));
        assert!(image_matches("*:1.2", "quay.io/x/y:1.2"));
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> =
            [("team".to_owned(), "a".to_owned())].into_iter().collect();
        let s = |yaml: &str| -> LabelSelector { serde_saphyr::from_str(yaml).unwrap() };
        assert!(s("matchLabels: {team: a}").matches(&labels));
        assert!(!s("matchLabels: {team: b}").matches(&labels));
        assert!(
            s("matchExpressions: [{key: team, operator: In, values: [a, b]}]").matches(&labels)
        );
        assert!(s("matchExpressions: [{key: env, operator: DoesNotExist}]").matches(&labels));
        assert!(
            !s("matchExpressions: [{key: team, operator: NotIn, values: [a]}]").matches(&labels)
        );
        assert!(!s("matchExpressions: [{key: env, operator: Exists}]").matches(&labels));
        assert!(s("{}").matches(&labels));
    }
}
