//! Webhook verification and body parsing for Golioth Pipeline deliveries (DESIGN §6).
