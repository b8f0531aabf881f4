//! The principal of a TLS client certificate: `User:` and the subject's common name,
//! or the whole subject (RFC 4514 order as the certificate lists it) when it has no
//! common name.

use crate::Principal;

/// The principal the leaf certificate `der` names, if it parses.
pub fn principal(der: &[u8]) -> Option<Principal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = match subject.iter_common_name().next() {
        Some(cn) => cn.as_str().ok()?.to_string(),
        None => subject.to_string(),
    };
    crate::check_name(&name).ok()?;
    Some(Principal::user(name))
}
