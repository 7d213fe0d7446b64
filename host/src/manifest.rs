//! Reads `spin.toml` the way Spin does for what the native host needs: application variables
//! (defaults, required), the `[[trigger.http]]` routing table, the cron triggers, and each
//! component's variables rendered from `{{ app_var }}` templates. One manifest, two hosts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use shared::api::Component;
use shared::api::routing::RoutePattern;

#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
    #[serde(default)]
    cron: Vec<RawCronTrigger>,
}

#[derive(Debug, Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct RawCronTrigger {
    pub component: String,
    pub cron_expression: String,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct RawVariable {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Deserialize, Default)]
struct RawComponent {
    source: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// What serves an HTTP route on the native host: a component of `shared::api`, or the `console`
/// component (the static web console of the `golioth-console` crate, no database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Api(Component),
    Console,
}

/// The manifest id of the console component.
pub const CONSOLE_COMPONENT: &str = "console";

impl Target {
    pub fn from_id(id: &str) -> Option<Target> {
        if id == CONSOLE_COMPONENT {
            return Some(Target::Console);
        }
        Component::from_id(id).map(Target::Api)
    }
}

/// One HTTP route of the manifest, bound to the component that serves it.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub pattern: RoutePattern,
    pub component_id: String,
}

/// The parts of `spin.toml` the native host uses.
#[derive(Debug)]
pub struct Manifest {
    pub variables: BTreeMap<String, RawVariable>,
    pub http_routes: Vec<HttpRoute>,
    pub cron: Vec<RawCronTrigger>,
    components: BTreeMap<String, RawComponent>,
}

/// The workspace's `spin.toml`.
pub fn default_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml")
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Manifest::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).context("parsing spin.toml")?;
        let mut http_routes = Vec::new();
        for t in raw.trigger.http {
            if !raw.component.contains_key(&t.component) {
                bail!("route {} names unknown component {}", t.route, t.component);
            }
            let pattern = RoutePattern::parse(&t.route)?;
            http_routes.push(HttpRoute {
                pattern,
                component_id: t.component,
            });
        }
        Ok(Manifest {
            variables: raw.variables,
            http_routes,
            cron: raw.trigger.cron,
            components: raw.component,
        })
    }

    pub fn component_ids(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(String::as_str)
    }

    /// The components that serve HTTP routes, each once, in route order (what `spin up -c …`
    /// starts to run the app without its cron trigger).
    pub fn http_components(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for r in &self.http_routes {
            if !ids.contains(&r.component_id.as_str()) {
                ids.push(&r.component_id);
            }
        }
        ids
    }

    pub fn component_source(&self, id: &str) -> Option<&str> {
        self.components.get(id).and_then(|c| c.source.as_deref())
    }

    /// Resolve every application variable: `env` (`SPIN_VARIABLE_<NAME>` or the bare name as
    /// given by the caller) first, then the default; a required variable without a value fails.
    pub fn resolve_variables(
        &self,
        env: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for (name, var) in &self.variables {
            let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
            let value = env
                .get(&env_name)
                .or_else(|| env.get(name))
                .cloned()
                .or_else(|| var.default.clone());
            match value {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None if var.required => missing.push(name.clone()),
                None => {}
            }
        }
        if !missing.is_empty() {
            bail!(
                "no value for required variable(s): {} (set SPIN_VARIABLE_<NAME>)",
                missing.join(", ")
            );
        }
        Ok(out)
    }

    /// The variables a component sees (`[component.x.variables]`), rendered from app variables.
    pub fn component_variables(
        &self,
        id: &str,
        app: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        let c = self
            .components
            .get(id)
            .ok_or_else(|| anyhow!("unknown component {id}"))?;
        c.variables
            .iter()
            .map(|(k, tpl)| Ok((k.clone(), render(tpl, app)?)))
            .collect()
    }

    /// The component's `allowed_outbound_hosts`, rendered.
    pub fn allowed_outbound_hosts(
        &self,
        id: &str,
        app: &HashMap<String, String>,
    ) -> Result<Vec<String>> {
        let c = self
            .components
            .get(id)
            .ok_or_else(|| anyhow!("unknown component {id}"))?;
        c.allowed_outbound_hosts
            .iter()
            .map(|t| render(t, app))
            .collect()
    }

    /// The HTTP routes as (pattern, what serves it) for `shared::api::routing::select`.
    pub fn route_table(&self) -> Result<Vec<(RoutePattern, Target)>> {
        self.http_routes
            .iter()
            .map(|r| {
                let t = Target::from_id(&r.component_id)
                    .ok_or_else(|| anyhow!("component {} has no handler", r.component_id))?;
                Ok((r.pattern.clone(), t))
            })
            .collect()
    }
}

/// Render `{{ name }}` templates (Spin's syntax; whitespace inside braces is optional).
pub fn render(template: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("unterminated template in {template:?}"))?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| anyhow!("template references undefined variable {name}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_templates() {
        let mut v = HashMap::new();
        v.insert("a".to_owned(), "1".to_owned());
        v.insert("b".to_owned(), "two".to_owned());
        assert_eq!(render("x{{ a }}y{{b}}z", &v).unwrap(), "x1ytwoz");
        assert!(render("{{ c }}", &v).is_err());
        assert!(render("{{ a ", &v).is_err());
    }

    #[test]
    fn the_workspace_manifest_loads_and_resolves() {
        let m = Manifest::load(&default_path()).unwrap();
        assert!(
            m.resolve_variables(&HashMap::new()).is_err(),
            "secrets are required"
        );
        let env: HashMap<String, String> = [
            ("SPIN_VARIABLE_DB_PASSWORD", "pw"),
            ("SPIN_VARIABLE_JWT_SECRET", "j"),
            ("SPIN_VARIABLE_ENCRYPTION_KEY", "k"),
            ("SPIN_VARIABLE_INTERNAL_TOKEN", "t"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let app = m.resolve_variables(&env).unwrap();
        let vars = m.component_variables("device-sync", &app).unwrap();
        assert_eq!(
            vars["db_url"],
            "postgres://golioth_sync_app:pw@127.0.0.1:5432/golioth_sync?sslmode=disable"
        );
        let hosts = m.allowed_outbound_hosts("device-sync", &app).unwrap();
        assert_eq!(
            hosts,
            ["postgres://127.0.0.1:5432", "https://api.golioth.io"]
        );
        let table = m.route_table().unwrap();
        assert!(table.len() >= 17);
        let console: Vec<&str> = table
            .iter()
            .filter(|(_, t)| *t == Target::Console)
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(console, [golioth_console::ROUTE]);
    }
}
