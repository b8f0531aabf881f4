//! Bearer tokens for gRPC, from a static file an operator keeps. The file holds one
//! token per line as `NAME sha256:HEX`, where HEX is the SHA-256 of the token: the
//! broker never stores a token itself, and a leaked file lets nobody in. Blank lines
//! and lines starting with `#` are skipped. `strata token create` writes a line and
//! prints the token once.
//!
//! Tokens are 32 random bytes, so their hash is looked up directly; a lookup's timing
//! tells an attacker nothing about a token they do not hold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::RwLock;

use crate::{AuthError, Principal};

/// Tokens start with this, so a leaked one is recognisable (and greppable).
pub const TOKEN_PREFIX: &str = "strata_";

/// The tokens of a file, reloadable.
pub struct TokenFile {
    path: PathBuf,
    tokens: RwLock<Arc<HashMap<[u8; 32], Principal>>>,
    /// The file's modification time and size when last read.
    seen: RwLock<Option<(std::time::SystemTime, u64)>>,
}

impl TokenFile {
    /// Reads the token file; an unreadable or malformed file is an error naming the
    /// line.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let f = Self {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::default()),
            seen: RwLock::new(None),
        };
        f.reload()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; on an error the tokens in use stay.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.io(e))?;
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?;
        let tokens = parse(&text)
            .map_err(|e| AuthError::Invalid(format!("token file {}: {e}", self.path.display())))?;
        let n = tokens.len();
        *self.tokens.write() = Arc::new(tokens);
        *self.seen.write() = meta.modified().ok().map(|m| (m, meta.len()));
        Ok(n)
    }

    /// Reloads if the file changed since it was read; `Ok(None)` if it did not.
    pub fn reload_if_changed(&self) -> Result<Option<usize>, AuthError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.io(e))?;
        let now = meta.modified().ok().map(|m| (m, meta.len()));
        if now.is_some() && now == *self.seen.read() {
            return Ok(None);
        }
        self.reload().map(Some)
    }

    /// Who holds `token`, if anyone.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let tokens = self.tokens.read().clone();
        tokens.get(&hash(token)).cloned()
    }

    fn io(&self, e: std::io::Error) -> AuthError {
        AuthError::Io(format!(
            "cannot read token file {}: {e}; check grpc_token_file",
            self.path.display()
        ))
    }
}

fn parse(text: &str) -> Result<HashMap<[u8; 32], Principal>, String> {
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why} (expected `NAME sha256:HEX`)", i + 1);
        let (name, hash) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("no hash"))?;
        let principal = Principal::parse(name).map_err(|e| bad(&e.to_string()))?;
        let hex = hash
            .trim()
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("the hash does not start with sha256:"))?;
        let digest = decode_hex(hex).ok_or_else(|| bad("the hash is not 64 hex digits"))?;
        tokens.insert(digest, principal);
    }
    Ok(tokens)
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new random token.
pub fn generate() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(crate::scram::random(32))
    )
}

/// The token file line for `name` holding `token`.
pub fn line(name: &Principal, token: &str) -> String {
    let hex: String = hash(token).iter().map(|b| format!("{b:02x}")).collect();
    format!("{} sha256:{hex}", name.name())
}

/// A token from an `authorization` header value (`Bearer TOKEN`).
pub fn bearer(header: &str) -> Result<&str, AuthError> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::Invalid("the authorization header is not `Bearer TOKEN`".into()))
}
