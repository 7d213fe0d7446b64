//! Webhook deliveries, telemetry and the device state they update.
