//! SCRAM (RFC 5802) with SHA-256 and SHA-512 (RFC 7677), as Kafka speaks it (KIP-84):
//! the broker side of the exchange, and the credentials it checks against.
//!
//! A [`ScramCredential`] holds the salt, the iteration count, `StoredKey = H(ClientKey)`
//! and `ServerKey`: enough to check a client's proof and to prove the server knows the
//! password, but not enough to log in as the user (the client key is not derivable
//! from it). Channel binding is not offered (Kafka does not either): a client asking
//! for it (`p=`) is refused, one that merely supports it (`y`) is accepted.

use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::{AuthError, Principal};

/// The fewest PBKDF2 iterations a credential may have (Kafka's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most (Kafka's maximum): a login costs this many HMACs.
pub const MAX_ITERATIONS: u32 = 16384;
/// Iterations of credentials made here.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's `ScramMechanism` code (AlterUserScramCredentials).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Self> {
        match t {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    /// The hash's output length.
    pub fn output_len(self) -> usize {
        self.digest().output_len()
    }

    pub(crate) fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// `Hi(password, salt, i)`: the salted password.
    pub fn salt_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        let i = NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
        pbkdf2::derive(self.pbkdf2(), i, salt, password, &mut out);
        out
    }
}

impl std::str::FromStr for Mechanism {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::from_name(&s.to_ascii_uppercase()).ok_or_else(|| {
            AuthError::Invalid(format!(
                "unknown SCRAM mechanism {s:?}; use SCRAM-SHA-256 or SCRAM-SHA-512"
            ))
        })
    }
}

/// What a broker stores of one user's password for one mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// A credential for `password` with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        if password.is_empty() {
            return Err(AuthError::Invalid("the password is empty".into()));
        }
        let salt = new_salt();
        let salted = mechanism.salt_password(password.as_bytes(), &salt, iterations);
        Self::from_salted_password(mechanism, salt, &salted, iterations)
    }

    /// A credential from a salted password a client computed (Kafka's
    /// AlterUserScramCredentials sends these, never the password).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: Vec<u8>,
        salted_password: &[u8],
        iterations: u32,
    ) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        if salt.is_empty() {
            return Err(AuthError::Invalid("the salt is empty".into()));
        }
        if salted_password.len() != mechanism.output_len() {
            return Err(AuthError::Invalid(format!(
                "a {} salted password is {} bytes, not {}",
                mechanism.name(),
                mechanism.output_len(),
                salted_password.len()
            )));
        }
        let client_key = mechanism.mac(salted_password, b"Client Key");
        Ok(Self {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.mac(salted_password, b"Server Key"),
        })
    }

    /// Whether `password` is this credential's (SASL/PLAIN). Costs the credential's
    /// PBKDF2 iterations: run it off the async workers.
    pub fn verify_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let salted = mechanism.salt_password(password.as_bytes(), &self.salt, self.iterations);
        let stored = mechanism.hash(&mechanism.mac(&salted, b"Client Key"));
        constant_time::verify_slices_are_equal(&stored, &self.stored_key).is_ok()
    }
}

/// Checks an iteration count against Kafka's bounds.
pub fn check_iterations(iterations: u32) -> Result<(), AuthError> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(AuthError::Invalid(format!(
            "{iterations} iterations is out of range; use {MIN_ITERATIONS} to {MAX_ITERATIONS}"
        )));
    }
    Ok(())
}

/// The made-up credential an unknown user is challenged with: its salt is a keyed
/// hash of the name (the same at every attempt while the broker runs, as a real
/// user's is), its keys random (no proof matches them).
pub fn unknown_user(mechanism: Mechanism, user: &str) -> ScramCredential {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| random(32));
    let mut salt = mechanism.mac(key, user.as_bytes());
    salt.truncate(24);
    ScramCredential {
        salt,
        iterations: DEFAULT_ITERATIONS,
        stored_key: random(mechanism.output_len()),
        server_key: random(mechanism.output_len()),
    }
}

/// A fresh salt: 24 random bytes (192 bits; its base64 needs no padding).
pub fn new_salt() -> Vec<u8> {
    random(24)
}

/// `n` random bytes from the system's generator.
pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    aws_lc_rs::rand::fill(&mut v).expect("the system random generator failed");
    v
}

/// The broker's side of one SCRAM exchange: [`ScramServer::client_first`] answers the
/// client's first message, [`ScramServer::client_final`] checks its proof.
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

enum State {
    Start,
    /// The server-first message went out.
    Challenged(Box<Challenged>),
    Done,
}

struct Challenged {
    user: String,
    credential: ScramCredential,
    /// False for a made-up credential: the exchange fails at the proof.
    known: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> Self {
        Self {
            mechanism,
            state: State::Start,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the client's first message has been seen.
    pub fn started(&self) -> bool {
        !matches!(self.state, State::Start)
    }

    /// Answers `client-first-message` with `server-first-message`. `lookup` finds the
    /// user's credential for this mechanism.
    pub fn client_first(
        &mut self,
        msg: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, AuthError> {
        let server_nonce = B64.encode(random(24));
        self.client_first_with_nonce(msg, lookup, &server_nonce)
    }

    pub(crate) fn client_first_with_nonce(
        &mut self,
        msg: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Start) {
            return Err(invalid("a client-first message came twice"));
        }
        self.state = State::Done;
        let msg = std::str::from_utf8(msg).map_err(|_| invalid("the message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or_else(|| invalid("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(invalid(
                    "channel binding is not supported; use SASL_SSL without it",
                ));
            }
            _ => return Err(invalid("the GS2 channel-binding flag is not n, y or p=")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| invalid("the GS2 header is cut short"))?;
        let gs2_header = &msg[..msg.len() - bare.len()];
        let mut attrs = bare.split(',');
        let user = match attrs.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(invalid("mandatory extensions are not supported"));
            }
            Some(a) => unescape(
                a.strip_prefix("n=")
                    .ok_or_else(|| invalid("no user name (n=)"))?,
            )?,
            None => return Err(invalid("no user name (n=)")),
        };
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|r| !r.is_empty())
            .ok_or_else(|| invalid("no client nonce (r=)"))?;
        for ext in attrs {
            // Kafka's delegation tokens ride here; Strata has none.
            if ext == "tokenauth=true" {
                return Err(invalid("delegation tokens are not supported"));
            }
        }
        if !authzid.is_empty()
            && authzid.strip_prefix("a=").map(unescape).transpose()? != Some(user.clone())
        {
            return Err(invalid(
                "an authorization id other than the user name is not supported",
            ));
        }
        // An unknown user gets a challenge like anyone's (a salt of its own, stable
        // for the name) and fails only at the proof: a stranger cannot tell which users
        // exist (RFC 5802, 5.1).
        let (credential, known) = match lookup(&user) {
            Some(c) => (c, true),
            None => (unknown_user(self.mechanism, &user), false),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = State::Challenged(Box::new(Challenged {
            user,
            credential,
            known,
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        }));
        Ok(out)
    }

    /// Checks `client-final-message`; on success answers `server-final-message` and
    /// who the client is.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(Principal, Vec<u8>), AuthError> {
        let State::Challenged(c) = std::mem::replace(&mut self.state, State::Done) else {
            return Err(invalid("a client-final message out of turn"));
        };
        let Challenged {
            user,
            credential,
            known,
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = *c;
        let msg = std::str::from_utf8(msg).map_err(|_| invalid("the message is not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or_else(|| invalid("no proof (p=)"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| invalid("no channel binding (c=)"))?;
        if binding != B64.encode(gs2_header.as_bytes()) {
            return Err(invalid("the channel binding does not match the GS2 header"));
        }
        let r = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| invalid("no nonce (r=)"))?;
        // Kafka's broker checks that the nonce *ends with* the one it sent, and older
        // librdkafka (Debian's 2.0.2 among them) relies on it: it repeats its own nonce
        // in front. The server's random part is still there, so the exchange is as
        // fresh, and the proof covers the message as sent.
        if !r.ends_with(nonce.as_str()) {
            return Err(AuthError::Failed);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| invalid("the proof is not base64"))?;
        let m = self.mechanism;
        if proof.len() != m.output_len() {
            return Err(AuthError::Failed);
        }
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.mac(&credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        constant_time::verify_slices_are_equal(&m.hash(&client_key), &credential.stored_key)
            .map_err(|_| AuthError::Failed)?;
        if !known {
            return Err(AuthError::Failed);
        }
        let verifier = m.mac(&credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(verifier)).into_bytes();
        Ok((Principal::user(user), server_final))
    }
}

/// The client's side of one exchange (what a Kafka client does; Strata's own tests use
/// it against the broker).
pub struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Self {
        let escaped = user.replace('=', "=3D").replace(',', "=2C");
        let nonce = B64.encode(random(18));
        Self {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={escaped},r={nonce}"),
            nonce,
            server_signature: None,
        }
    }

    /// `client-first-message`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// `client-final-message`, answering the server's first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| invalid("the message is not UTF-8"))?;
        let mut attrs = server_first.split(',');
        let mut next = |p: &str| {
            attrs
                .next()
                .and_then(|a| a.strip_prefix(p))
                .ok_or_else(|| invalid("a malformed server-first message"))
        };
        let nonce = next("r=")?;
        let salt = B64
            .decode(next("s=")?)
            .map_err(|_| invalid("the salt is not base64"))?;
        let iterations: u32 = next("i=")?
            .parse()
            .map_err(|_| invalid("the iteration count is not a number"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(invalid("the server's nonce does not extend ours"));
        }
        check_iterations(iterations)?;
        let m = self.mechanism;
        let salted = m.salt_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.mac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = m.mac(&m.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_signature = Some(m.mac(&m.mac(&salted, b"Server Key"), auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message: it proves the server knew the credential.
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), AuthError> {
        let expected = self
            .server_signature
            .as_ref()
            .ok_or_else(|| invalid("no exchange to verify"))?;
        let v = std::str::from_utf8(msg)
            .ok()
            .and_then(|m| m.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(AuthError::Failed)?;
        constant_time::verify_slices_are_equal(&v, expected).map_err(|_| AuthError::Failed)
    }
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(format!("SCRAM: {why}"))
}

/// A `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn unescape(s: &str) -> Result<String, AuthError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(invalid("a user name holds an '=' not written =2C or =3D")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    crate::check_name(&out)?;
    Ok(out)
}

/// Serde as standard base64 strings.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}
