//! Golioth Management REST API client over the `HttpClient` port (GOLIOTH_API.md). Owned by the Golioth issue.
