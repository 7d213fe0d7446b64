//! The import check: lists each built component's imports and exports (wasmparser) and fails when
//! one falls outside what Spin 4.0.x provides: the HTTP components are WASI P3 components
//! (`wasi:http/handler@0.3.0-rc-2026-03-15`, spin-sdk 6.0.0), the cron component a WASI 0.2
//! component for the cron plugin's Spin 3.5 host.

use anyhow::{Context, Result, bail};
use wasmparser::{Parser, Payload};

/// Top-level imports and exports of a component.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Surface {
    /// Instance and function imports: what the host must implement.
    pub imports: Vec<String>,
    /// Type-only imports (a world's `use`d types, e.g. the cron world's `metadata` and `error`).
    pub type_imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Read the top-level import and export names of a component binary.
pub fn surface(bytes: &[u8]) -> Result<Surface> {
    let mut s = Surface::default();
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("parsing the component")? {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 {
                    is_component = matches!(encoding, wasmparser::Encoding::Component);
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for imp in reader {
                    let imp = imp?;
                    let name = imp.name.full_name().into_owned();
                    if matches!(imp.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        s.type_imports.push(name);
                    } else {
                        s.imports.push(name);
                    }
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for exp in reader {
                    s.exports.push(exp?.name.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    if !is_component {
        bail!("not a WebAssembly component (a core module?)");
    }
    Ok(s)
}

/// What kind of Spin component a binary is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP component: WASI P3 (spin-sdk 6.0.0), run by Spin 4.0.x's HTTP trigger.
    Http,
    /// The cron component: WASI 0.2 (spin-sdk 5.2), run by the cron plugin (a Spin 3.5 host).
    Cron,
}

/// The WASI P3 release candidate Spin 4.0.x implements (and spin-sdk 6.0.0 targets).
pub const WASI_P3_RC: &str = "0.3.0-rc-2026-03-15";

fn split(name: &str) -> (&str, &str) {
    match name.split_once('@') {
        Some((n, v)) => (n, v),
        None => (name, ""),
    }
}

/// Is this import provided by Spin to a component of `kind`?
pub fn import_allowed(kind: Kind, name: &str) -> bool {
    let (iface, version) = split(name);
    let wasi02 = version.starts_with("0.2.");
    let p3 = kind == Kind::Http && version == WASI_P3_RC;
    match iface {
        // The Rust standard library's own imports stay WASI 0.2 (wasm32-wasip2) in both kinds.
        "wasi:cli/environment"
        | "wasi:cli/exit"
        | "wasi:cli/stdin"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr"
        | "wasi:cli/terminal-input"
        | "wasi:cli/terminal-output"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr"
        | "wasi:clocks/monotonic-clock"
        | "wasi:clocks/wall-clock"
        | "wasi:random/random"
        | "wasi:random/insecure"
        | "wasi:random/insecure-seed"
        | "wasi:filesystem/types"
        | "wasi:filesystem/preopens" => wasi02 || p3,
        "wasi:cli/types" | "wasi:clocks/types" | "wasi:clocks/system-clock" => p3,
        "wasi:io/error" | "wasi:io/poll" | "wasi:io/streams" => wasi02,
        "wasi:http/types" => wasi02 && kind == Kind::Cron || p3,
        "wasi:http/outgoing-handler" => wasi02 && kind == Kind::Cron,
        "wasi:http/client" => p3,
        // spin-sdk 6.0.0's Postgres (the async functions are 4.2.0's) and variables.
        "spin:postgres/postgres" => kind == Kind::Http && version == "4.2.0",
        "spin:variables/variables" => kind == Kind::Http && version == "3.0.0",
        "fermyon:spin/variables" => kind == Kind::Cron && version == "2.0.0",
        "fermyon:spin-cron/cron-types" => kind == Kind::Cron && version == "2.0.0",
        _ => false,
    }
}

/// Type-only imports a world of `kind` declares (the cron world `use`s `metadata` and `error`).
pub fn type_import_allowed(kind: Kind, name: &str) -> bool {
    kind == Kind::Cron && matches!(name, "metadata" | "error")
}

/// The exports Spin calls for `kind`; a component must export exactly what its trigger needs.
pub fn export_allowed(kind: Kind, name: &str) -> bool {
    let (iface, version) = split(name);
    match kind {
        Kind::Http => iface == "wasi:http/handler" && version == WASI_P3_RC,
        Kind::Cron => name == "handle-cron-event",
    }
}

/// Check a component: every import allowed, every export allowed, the trigger's export present.
pub fn check(kind: Kind, bytes: &[u8]) -> Result<Surface> {
    let s = surface(bytes)?;
    let bad_imports: Vec<_> = s
        .imports
        .iter()
        .filter(|i| !import_allowed(kind, i))
        .chain(
            s.type_imports
                .iter()
                .filter(|t| !type_import_allowed(kind, t)),
        )
        .collect();
    let bad_exports: Vec<_> = s
        .exports
        .iter()
        .filter(|e| !export_allowed(kind, e))
        .collect();
    if !bad_imports.is_empty() || !bad_exports.is_empty() {
        bail!(
            "imports Spin does not provide: {bad_imports:?}; unexpected exports: {bad_exports:?}"
        );
    }
    if s.exports.is_empty() {
        bail!("the component exports nothing for its trigger");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(wat_src: &str) -> Vec<u8> {
        wat::parse_str(wat_src).unwrap()
    }

    #[test]
    fn rejects_a_forbidden_import() {
        let bytes = component(
            r#"(component
                 (import "wasi:sockets/tcp@0.2.0" (instance))
                 (import "wasi:io/streams@0.2.6" (instance))
                 (export "wasi:http/handler@0.3.0-rc-2026-03-15" (instance 0)))"#,
        );
        let s = surface(&bytes).unwrap();
        assert_eq!(
            s.imports,
            ["wasi:sockets/tcp@0.2.0", "wasi:io/streams@0.2.6"]
        );
        let err = check(Kind::Http, &bytes).unwrap_err().to_string();
        assert!(err.contains("wasi:sockets/tcp@0.2.0"), "{err}");
        assert!(!err.contains("wasi:io/streams"), "{err}");
    }

    #[test]
    fn rejects_wrong_versions_and_foreign_kinds() {
        // spin-sdk 7's final WASI 0.3 does not load on Spin 4.0.x; nor does a P2 HTTP export.
        assert!(!import_allowed(Kind::Http, "wasi:http/types@0.3.0"));
        assert!(!export_allowed(Kind::Http, "wasi:http/handler@0.3.0"));
        assert!(!export_allowed(
            Kind::Http,
            "wasi:http/incoming-handler@0.2.6"
        ));
        assert!(export_allowed(
            Kind::Http,
            "wasi:http/handler@0.3.0-rc-2026-03-15"
        ));
        assert!(import_allowed(
            Kind::Http,
            "wasi:http/client@0.3.0-rc-2026-03-15"
        ));
        assert!(import_allowed(Kind::Http, "spin:postgres/postgres@4.2.0"));
        // The cron plugin's Spin 3.5 host has neither postgres 4.2.0 nor any P3 interface.
        assert!(!import_allowed(Kind::Cron, "spin:postgres/postgres@4.2.0"));
        assert!(!import_allowed(
            Kind::Cron,
            "wasi:http/types@0.3.0-rc-2026-03-15"
        ));
        assert!(import_allowed(
            Kind::Cron,
            "wasi:http/outgoing-handler@0.2.6"
        ));
        assert!(!import_allowed(
            Kind::Http,
            "wasi:http/outgoing-handler@0.2.6"
        ));
        assert!(!import_allowed(
            Kind::Http,
            "fermyon:spin-cron/cron-types@2.0.0"
        ));
        assert!(import_allowed(
            Kind::Cron,
            "fermyon:spin-cron/cron-types@2.0.0"
        ));
        assert!(type_import_allowed(Kind::Cron, "metadata"));
        assert!(!type_import_allowed(Kind::Http, "metadata"));
    }

    #[test]
    fn accepts_an_allowed_component_and_rejects_a_core_module() {
        let ok = component(
            r#"(component
                 (import "spin:variables/variables@3.0.0" (instance))
                 (export "wasi:http/handler@0.3.0-rc-2026-03-15" (instance 0)))"#,
        );
        check(Kind::Http, &ok).unwrap();
        let core = wat::parse_str("(module)").unwrap();
        assert!(surface(&core).is_err());
    }
}
