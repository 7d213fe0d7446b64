//! Route patterns in Spin's syntax (`/a/:id/b`, trailing `/...`) and Spin's selection rule, used by
//! both hosts: the native host picks the component with it, and each component's dispatcher reads
//! path parameters with it from the request path, so parameters are read the same way everywhere.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed Spin route: literal and `:name` segments, optionally ending in the `/...` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid route pattern {0:?}")]
pub struct PatternError(pub String);

impl RoutePattern {
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        if !raw.starts_with('/') {
            return Err(PatternError(raw.to_owned()));
        }
        let (body, wildcard) = match raw.strip_suffix("/...") {
            Some(b) => (b, true),
            None if raw == "/..." => ("", true),
            None => (raw, false),
        };
        let mut segments = Vec::new();
        for seg in body.split('/').filter(|s| !s.is_empty()) {
            if seg == "..." {
                return Err(PatternError(raw.to_owned()));
            }
            if let Some(name) = seg.strip_prefix(':') {
                if name.is_empty() {
                    return Err(PatternError(raw.to_owned()));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(RoutePattern {
            raw: raw.to_owned(),
            segments,
            wildcard,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Parameter names in order, e.g. `["org_id", "service_id"]`.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Match a request path (no query string). Returns the path parameters on success.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return None;
        }
        let mut params = Params::default();
        for (seg, part) in self.segments.iter().zip(&parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.0.push((name.clone(), (*part).to_owned())),
            }
        }
        Some(params)
    }

    /// Sort key for precedence: exact routes beat wildcards; then more segments; then more literals.
    fn specificity(&self) -> (bool, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (!self.wildcard, self.segments.len(), literals)
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Path parameters captured by a match, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Pick the most specific matching route (Spin: exact beats wildcard, longest prefix wins).
pub fn select<'a, T>(routes: &'a [(RoutePattern, T)], path: &str) -> Option<(&'a T, Params)> {
    routes
        .iter()
        .filter_map(|(p, t)| p.matches(path).map(|params| (p, t, params)))
        .max_by_key(|(p, _, _)| p.specificity())
        .map(|(_, t, params)| (t, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn exact_and_params() {
        let r = p("/api/v1/orgs/:org_id/services/:service_id");
        let m = r.matches("/api/v1/orgs/o1/services/s1").unwrap();
        assert_eq!(m.get("org_id"), Some("o1"));
        assert_eq!(m.get("service_id"), Some("s1"));
        assert!(r.matches("/api/v1/orgs/o1/services").is_none());
        assert!(r.matches("/api/v1/orgs/o1/services/s1/x").is_none());
        assert_eq!(
            r.param_names().collect::<Vec<_>>(),
            ["org_id", "service_id"]
        );
    }

    #[test]
    fn wildcard_matches_prefix_and_itself() {
        let r = p("/users/...");
        assert!(r.matches("/users").is_some());
        assert!(r.matches("/users/1/edit").is_some());
        assert!(r.matches("/user").is_none());
        assert!(p("/...").matches("/anything/at/all").is_some());
    }

    #[test]
    fn precedence_exact_beats_wildcard_and_literal_beats_param() {
        let routes = vec![
            (p("/api/..."), "wild"),
            (p("/api/x/:id"), "param"),
            (p("/api/x/resolve"), "literal"),
        ];
        assert_eq!(*select(&routes, "/api/x/resolve").unwrap().0, "literal");
        assert_eq!(*select(&routes, "/api/x/42").unwrap().0, "param");
        assert_eq!(*select(&routes, "/api/y").unwrap().0, "wild");
        assert!(select(&routes, "/other").is_none());
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(RoutePattern::parse("api").is_err());
        assert!(RoutePattern::parse("/a/:/b").is_err());
        assert!(RoutePattern::parse("/a/.../b").is_err());
    }
}
