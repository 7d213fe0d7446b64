//! The layer rule of `shared/src`, kept by a test: every `crate::`, `super::` and `self::` path
//! (imports and inline paths alike) must point at the file's own unit or at a unit listed before
//! it in [`UNITS`] — so `api` → `app` → `domain` → `base`, never up, and within a layer only
//! towards earlier units. Files under `api/` must also hold no SQL and open no transaction.
//! ARCHITECTURE.md ("Layers") describes the same table.

use std::fmt;
use std::path::{Path, PathBuf};

/// Every unit of `shared/src`, bottom first: `(layer, unit)`. A unit is a module directly under
/// its layer's folder (`api` is one unit). A unit may use itself and the units listed before it.
const UNITS: &[(&str, &str)] = &[
    ("base", "base::log"),
    ("base", "base::ports"),
    ("base", "base::error"),
    ("base", "base::settings"),
    ("base", "base::ctx"),
    ("domain", "domain::sync"),
    ("domain", "domain::service"),
    ("domain", "domain::crypto"),
    ("domain", "domain::golioth"),
    ("domain", "domain::webhook"),
    ("domain", "domain::store"),
    ("app", "app::access"),
    ("app", "app::health"),
    ("app", "app::service_cache"),
    ("app", "app::services"),
    ("app", "app::engine"),
    ("app", "app::runs"),
    ("app", "app::conflicts"),
    ("app", "app::ingest"),
    ("api", "api"),
    ("runtime", "runtime::native"),
    ("runtime", "runtime::spin"),
];

/// What a file under `api/` must not contain: the store's business, not HTTP's.
const NOT_IN_API: &[&str] = &[
    "in_org(",
    "transaction(",
    ".query(\"",
    ".execute(\"",
    "\"SELECT ",
    "\"INSERT ",
    "\"UPDATE ",
    "\"DELETE ",
    "\"WITH ",
];

#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    text: String,
    why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} ({})",
            self.file, self.line, self.text, self.why
        )
    }
}

/// The module path of a file relative to `src` (`app/conflicts/plan.rs` → `app::conflicts::plan`,
/// `app/conflicts/mod.rs` → `app::conflicts`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The rank of the unit an absolute module path belongs to, with the unit's name; a path that
/// names only a layer (`crate::app`) gets the layer's top rank.
fn rank_of(path: &[String]) -> Option<(usize, &'static str)> {
    let first = path.first()?;
    if first == "api" {
        return UNITS.iter().position(|u| u.1 == "api").map(|i| (i, "api"));
    }
    if let Some(second) = path.get(1) {
        let unit = format!("{first}::{second}");
        if let Some(i) = UNITS.iter().position(|u| u.1 == unit) {
            return Some((i, UNITS[i].1));
        }
    }
    UNITS
        .iter()
        .rposition(|u| u.0 == first)
        .map(|i| (i, UNITS[i].0))
}

/// Source with comment lines blanked (numbering kept), so doc links are not counted as uses.
fn code_lines(src: &str) -> String {
    src.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expand the paths starting at `at` (just after a `crate`/`super`/`self` keyword and its
/// `::`), following `{a, b::c}` groups; each result is the list of segments after the keyword.
fn paths_at(code: &str, at: usize) -> Vec<Vec<String>> {
    let bytes: Vec<char> = code[at..].chars().collect();
    let mut out = Vec::new();
    expand(&bytes, &mut 0, Vec::new(), &mut out);
    out
}

fn expand(s: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut segs = prefix;
    loop {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
        if *i < s.len() && s[*i] == '{' {
            *i += 1;
            loop {
                expand(s, i, segs.clone(), out);
                while *i < s.len() && s[*i].is_whitespace() {
                    *i += 1;
                }
                match s.get(*i) {
                    Some(',') => *i += 1,
                    Some('}') => {
                        *i += 1;
                        return;
                    }
                    _ => return,
                }
                while *i < s.len() && s[*i].is_whitespace() {
                    *i += 1;
                }
                if s.get(*i) == Some(&'}') {
                    *i += 1;
                    return;
                }
            }
        }
        let start = *i;
        while *i < s.len() && is_ident(s[*i]) {
            *i += 1;
        }
        if start == *i {
            out.push(segs);
            return;
        }
        segs.push(s[start..*i].iter().collect());
        if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
            *i += 2;
        } else {
            // `as alias`, `;`, `,`, `}`, `(`, `<` … end the path.
            out.push(segs);
            return;
        }
    }
}

/// The spans of inline `mod name { … }` blocks (test modules), so `super::` inside them is
/// resolved from the inline module, not the file's.
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let mut spans = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let after = rest[name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        // Braces inside string literals may not balance: an unclosed block runs to the end of
        // the file (inline modules are test modules, at the end).
        let mut depth = 0usize;
        let mut close = code.len();
        let start = chars.iter().position(|(i, _)| *i == open).unwrap_or(0);
        for (i, c) in &chars[start..] {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        close = *i;
                        break;
                    }
                }
                _ => {}
            }
        }
        spans.push((open, close, name));
    }
    spans
}

/// Check one file's source; `rel` is its path under `src`.
fn check_file(rel: &Path, src: &str) -> Vec<Violation> {
    let file = rel.display().to_string();
    let module = module_of(rel);
    let mut violations = Vec::new();
    if module.is_empty() {
        return violations; // lib.rs: module declarations only
    }
    let Some((own, own_name)) = rank_of(&module) else {
        violations.push(Violation {
            file,
            line: 1,
            text: module.join("::"),
            why: "this module is in no layer: add its unit to UNITS in shared/tests/layers.rs \
                  and to ARCHITECTURE.md"
                .into(),
        });
        return violations;
    };
    let code = code_lines(src);
    let inline = inline_modules(&code);
    for keyword in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(keyword) {
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue; // e.g. `my_crate::`
            }
            let line = code[..at].matches('\n').count() + 1;
            for segs in paths_at(&code, at + keyword.len()) {
                let mut here = module.clone();
                here.extend(
                    inline
                        .iter()
                        .filter(|(open, close, _)| *open < at && at < *close)
                        .map(|(_, _, name)| name.clone()),
                );
                let mut target: Vec<String> = match keyword {
                    "crate::" => Vec::new(),
                    _ => here,
                };
                let mut rest = segs.as_slice();
                if keyword == "super::" {
                    target.pop();
                    while rest.first().map(String::as_str) == Some("super") {
                        target.pop();
                        rest = &rest[1..];
                    }
                }
                target.extend(rest.iter().cloned());
                let Some((to, to_name)) = rank_of(&target) else {
                    continue; // a path outside any unit (the crate root)
                };
                if to > own {
                    violations.push(Violation {
                        file: file.clone(),
                        line,
                        text: format!("{keyword}{}", segs.join("::")),
                        why: format!("{own_name} may not use {to_name}, which is above it"),
                    });
                }
            }
        }
    }
    if module.first().map(String::as_str) == Some("api") {
        for (n, l) in code.lines().enumerate() {
            for bad in NOT_IN_API {
                if l.contains(bad) {
                    violations.push(Violation {
                        file: file.clone(),
                        line: n + 1,
                        text: l.trim().to_owned(),
                        why: format!("the HTTP layer holds no SQL or transactions ({bad})"),
                    });
                }
            }
        }
    }
    violations
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_dependency_in_shared_src_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut violations = Vec::new();
    let mut paths = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        paths += text.matches("crate::").count();
        violations.extend(check_file(f.strip_prefix(&src).expect("under src"), &text));
    }
    assert!(
        paths > 100,
        "only {paths} crate:: paths seen: is the scan reading the sources?"
    );
    let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        list.is_empty(),
        "{} import(s) break the layer rule:\n{}",
        list.len(),
        list.join("\n")
    );
}

#[test]
fn every_unit_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (_, unit) in UNITS {
        let rel = unit.replace("::", "/");
        assert!(
            src.join(format!("{rel}.rs")).exists() || src.join(&rel).join("mod.rs").exists(),
            "UNITS names {unit}, which has no file"
        );
    }
}

#[test]
fn the_checker_catches_upward_and_sideways_paths() {
    let v = |rel: &str, src: &str| check_file(Path::new(rel), src);
    // Upward, as an import, in a group, inline, and through `super`.
    let up = v(
        "domain/sync/plan.rs",
        "use crate::api::Request;\nuse crate::{base::ports::Db, app::engine};\n\
         fn f() { crate::app::runs::start(); }\n",
    );
    let lines: Vec<usize> = up.iter().map(|x| x.line).collect();
    assert_eq!(lines, vec![1, 2, 3], "{up:?}");
    assert!(
        up[0].why.contains("domain::sync may not use api"),
        "{}",
        up[0]
    );
    assert_eq!(up[1].text, "crate::app::engine");
    let sideways = v("domain/sync/mod.rs", "use crate::domain::store::in_org;\n");
    assert_eq!(sideways.len(), 1, "{sideways:?}");
    let escape = v("base/ports/nonempty.rs", "use super::super::ctx::Ctx;\n");
    assert_eq!(escape.len(), 1, "{escape:?}");
    // `super` in a test module is the file's own module.
    assert!(v("domain/crypto.rs", "mod tests {\n    use super::*;\n}\n").is_empty());
    let from_test = v(
        "domain/crypto.rs",
        "mod tests {\n    use super::super::store;\n}\n",
    );
    assert_eq!(from_test.len(), 1, "{from_test:?}");
    // Downward and same-unit paths pass; comments are not code.
    assert!(
        v(
            "app/conflicts/plan.rs",
            "use super::{Decision, Failure};\nuse super::super::services::load;\n\
             use crate::domain::{store::conflicts as db, sync::Field};\n\
             //! see [`crate::api`]\n/// [`crate::api::dispatch`]\n"
        )
        .is_empty()
    );
    // SQL in the HTTP layer.
    let sql = v(
        "api/runs.rs",
        "fn f(db: &dyn Db) { db.query(\"SELECT 1\", &[]); }\n",
    );
    assert_eq!(sql.len(), 2, "{sql:?}");
    // A file outside every unit.
    assert_eq!(v("extra/thing.rs", "fn f() {}\n").len(), 1);
}
