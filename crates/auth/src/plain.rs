//! SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against the
//! user's stored SCRAM credential ([`crate::ScramCredential::verify_password`]), so
//! one set of users serves both mechanisms. PLAIN sends the password itself: offer it
//! only on a TLS listener.

use crate::AuthError;

/// A PLAIN message, parsed. The password is not shown by `Debug`.
pub struct PlainMessage {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainMessage")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Parses a PLAIN message. An authorization id other than the user is refused.
pub fn parse(msg: &[u8]) -> Result<PlainMessage, AuthError> {
    let invalid = |why: &str| AuthError::Invalid(format!("PLAIN: {why}"));
    let msg = std::str::from_utf8(msg).map_err(|_| invalid("the message is not UTF-8"))?;
    let mut parts = msg.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("expected authzid NUL user NUL password"));
    };
    crate::check_name(user)?;
    if !authzid.is_empty() && authzid != user {
        return Err(invalid(
            "an authorization id other than the user name is not supported",
        ));
    }
    if password.is_empty() {
        return Err(AuthError::Failed);
    }
    Ok(PlainMessage {
        user: user.to_string(),
        password: password.to_string(),
    })
}
