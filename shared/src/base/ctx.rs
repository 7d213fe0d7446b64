//! The request-independent context every use case runs with: the ports (database, outbound HTTP,
//! clock, configuration) and the settings derived from the configuration. Owned by the runtime
//! adapter that serves a request or a tick; uses only the rest of `base`.

use crate::base::ports::{Clock, Config, Db, HttpClient};
use crate::base::settings::Settings;

/// What a handler or use case may use: the ports for this request and the settings derived from
/// `Config`.
pub struct Ctx<'a> {
    pub db: &'a dyn Db,
    pub http: &'a dyn HttpClient,
    pub clock: &'a dyn Clock,
    pub config: &'a dyn Config,
    pub settings: Settings,
}

impl<'a> Ctx<'a> {
    pub fn new(
        db: &'a dyn Db,
        http: &'a dyn HttpClient,
        clock: &'a dyn Clock,
        config: &'a dyn Config,
    ) -> Self {
        Ctx {
            db,
            http,
            clock,
            config,
            settings: Settings::from_config(config),
        }
    }
}
