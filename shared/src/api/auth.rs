//! Who is calling and what they may do: HS256 JWT verification (`exp` enforced, `alg` pinned),
//! the caller's role (from [`crate::app::access`]), and the rule that another organization's
//! resources answer 404 (no enumeration) while a too-weak role answers 403.

use serde::Deserialize;
use uuid::Uuid;

use crate::api::Request;
use crate::api::routing::Params;
use crate::app::access::{self, Role};
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::base::settings::Settings;
use crate::domain::crypto::secrets_equal;

/// An authenticated member of the organization named in the path.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub role: Role,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Display claims the platform may add (OpenID Connect's `name` and `email`). Read as any
    /// JSON value, so a claim of another type is ignored rather than refusing the token.
    #[serde(default)]
    name: Option<serde_json::Value>,
    #[serde(default)]
    email: Option<serde_json::Value>,
}

/// Who a verified token names: the user id and, when the token carries them as short strings,
/// a display name and an email address (for the console; never used to authorize).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// A display claim kept only when it is a non-empty string of at most 200 characters without
/// control characters.
fn display_claim(v: Option<serde_json::Value>) -> Option<String> {
    let s = v?.as_str()?.trim().to_owned();
    (!s.is_empty() && s.chars().count() <= 200 && !s.chars().any(char::is_control)).then_some(s)
}

/// The bearer token of a request, if any.
pub fn bearer(req: &Request) -> Option<&str> {
    let v = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Verify an HS256 JWT and return its subject. Rejects `alg: none`, other algorithms, a bad
/// signature, a missing or past `exp`, and a `sub` that is not a uuid — all as 401.
pub fn verify_jwt(token: &str, secret: &str) -> Result<Uuid, ApiError> {
    verify_identity(token, secret).map(|i| i.user_id)
}

/// [`verify_jwt`], keeping the token's display claims too.
pub fn verify_identity(token: &str, secret: &str) -> Result<Identity, ApiError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| ApiError::unauthorized(format!("invalid token: {}", jwt_reason(&e))))?;
    let user_id = Uuid::parse_str(&data.claims.sub)
        .map_err(|_| ApiError::unauthorized("invalid token: sub is not a user id"))?;
    Ok(Identity {
        user_id,
        name: display_claim(data.claims.name),
        email: display_claim(data.claims.email),
    })
}

/// Authenticate the request's bearer token without an organization (`GET /api/v1/me`).
pub fn authenticate(req: &Request, ctx: &Ctx<'_>) -> Result<Identity, ApiError> {
    let token = bearer(req).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let secret = Settings::require(&ctx.settings.jwt_secret, "jwt_secret")?;
    verify_identity(token, secret.expose())
}

fn jwt_reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not allowed",
        ErrorKind::MissingRequiredClaim(_) => "missing claim",
        _ => "malformed",
    }
}

/// Parse a uuid path parameter; anything else is a 404 (the resource cannot exist).
pub fn path_uuid(params: &Params, name: &str) -> Result<Uuid, ApiError> {
    params
        .get(name)
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| ApiError::not_found(format!("no such {}", name.trim_end_matches("_id"))))
}

/// Authenticate the request and authorize it for the organization in the path with at least
/// `min` role. Non-members get 404, as if the organization did not exist.
pub async fn authorize(
    req: &Request,
    params: &Params,
    ctx: &Ctx<'_>,
    min: Role,
) -> Result<Caller, ApiError> {
    let token = bearer(req).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let secret = Settings::require(&ctx.settings.jwt_secret, "jwt_secret")?;
    let user_id = verify_jwt(token, secret.expose())?;
    let org_id = path_uuid(params, "org_id")?;
    let role = access::role(ctx, org_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such organization"))?;
    if role < min {
        return Err(ApiError::forbidden(format!(
            "this action needs the {min} role; you are {role}"
        )));
    }
    Ok(Caller {
        user_id,
        org_id,
        role,
    })
}

/// Authenticate an internal call (`/internal/tick`) by the internal token.
pub fn authorize_internal(req: &Request, ctx: &Ctx<'_>) -> Result<(), ApiError> {
    let expected = Settings::require(&ctx.settings.internal_token, "internal_token")?;
    let token = bearer(req).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    if secrets_equal(token.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid internal token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const SECRET: &str = "s3cret";

    fn token(alg: jsonwebtoken::Algorithm, claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp(offset: i64) -> i64 {
        chrono::Utc::now().timestamp() + offset
    }

    #[test]
    fn accepts_a_valid_token() {
        let user = Uuid::new_v4();
        let t = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": user.to_string(), "exp": exp(60)}),
            SECRET,
        );
        assert_eq!(verify_jwt(&t, SECRET).unwrap(), user);
    }

    #[test]
    fn rejects_forgeries() {
        let sub = Uuid::new_v4().to_string();
        let expired = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": sub, "exp": exp(-120)}),
            SECRET,
        );
        let wrong_key = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": sub, "exp": exp(60)}),
            "other",
        );
        let hs512 = token(
            jsonwebtoken::Algorithm::HS512,
            json!({"sub": sub, "exp": exp(60)}),
            SECRET,
        );
        let no_exp = token(jsonwebtoken::Algorithm::HS256, json!({"sub": sub}), SECRET);
        let not_uuid = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": "admin", "exp": exp(60)}),
            SECRET,
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(json!({"sub": sub, "exp": exp(60)}).to_string());
        let alg_none = format!("{header}.{body}.");
        for (name, t) in [
            ("expired", expired),
            ("wrong key", wrong_key),
            ("hs512", hs512),
            ("no exp", no_exp),
            ("sub not uuid", not_uuid),
            ("alg none", alg_none),
            ("garbage", "a.b.c".to_owned()),
        ] {
            let err = verify_jwt(&t, SECRET).unwrap_err();
            assert_eq!(err.status, 401, "{name}");
        }
    }

    #[test]
    fn bearer_parsing() {
        let req = |v: &str| {
            http::Request::builder()
                .header("authorization", v)
                .body(bytes::Bytes::new())
                .unwrap()
        };
        assert_eq!(bearer(&req("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&req("bearer abc")), Some("abc"));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer ")), None);
    }

    #[test]
    fn display_claims_are_kept_only_as_short_strings() {
        let user = Uuid::new_v4();
        let t = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": user.to_string(), "exp": exp(60), "name": " Ada Lovelace ", "email": "ada@example.com"}),
            SECRET,
        );
        let id = verify_identity(&t, SECRET).unwrap();
        assert_eq!(id.user_id, user);
        assert_eq!(id.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(id.email.as_deref(), Some("ada@example.com"));
        // Another type, an empty string, a control character or a huge value: left out, and the
        // token is still valid.
        let t = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": user.to_string(), "exp": exp(60), "name": {"given": "Ada"}, "email": "a\u{7}b"}),
            SECRET,
        );
        let id = verify_identity(&t, SECRET).unwrap();
        assert_eq!((id.name, id.email), (None, None));
        let t = token(
            jsonwebtoken::Algorithm::HS256,
            json!({"sub": user.to_string(), "exp": exp(60), "name": "x".repeat(201), "email": ""}),
            SECRET,
        );
        let id = verify_identity(&t, SECRET).unwrap();
        assert_eq!((id.name, id.email), (None, None));
    }
}
