//! The identity of a peer that presented a verified certificate (mutual
//! TLS), as the application sees it in `ConnectionInfo::identity`.
//!
//! Format: the subject's common name and the subject alternative names, in
//! that order, comma separated: `CN=alice, DNS=alice.example,
//! URI=spiffe://prod/alice`. Parts that are absent are left out; a
//! certificate with none of them is identified by `serial=<hex>`.

use std::fmt::Write;

use rustls::pki_types::CertificateDer;

/// The identity string of a verified end-entity certificate, or `None` if
/// it cannot be parsed (rustls has verified it, so this does not happen in
/// practice).
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut parts: Vec<String> = Vec::new();
    if let Some(cn) = common_name(cert.subject()) {
        parts.push(format!("CN={cn}"));
    }
    parts.extend(cert.valid_dns_names().map(|n| format!("DNS={n}")));
    parts.extend(cert.valid_uri_names().map(|n| format!("URI={n}")));
    if parts.is_empty() {
        let mut hex = String::from("serial=");
        for byte in cert.serial() {
            let _ = write!(hex, "{byte:02x}");
        }
        parts.push(hex);
    }
    Some(parts.join(", "))
}

/// DER: one tag-length-value; returns (tag, value, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

/// The first common name (OID 2.5.4.3) of a DER `Name` given without its
/// outer SEQUENCE, as webpki hands it out.
fn common_name(mut rdns: &[u8]) -> Option<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    while !rdns.is_empty() {
        let (tag, mut set, rest) = tlv(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, attribute, rest) = tlv(set)?;
            set = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(attribute)?;
            if tag != OID || oid != CN {
                continue;
            }
            let (tag, text, _) = tlv(value)?;
            // UTF8String, PrintableString, TeletexString, IA5String.
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: &rcgen::CertificateParams) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().clone()
    }

    #[test]
    fn common_name_and_alternative_names_are_listed() {
        let mut params =
            rcgen::CertificateParams::new(vec!["alice.example".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://prod/alice".try_into().expect("uri"),
        ));
        assert_eq!(
            identity_of(&cert(&params)).as_deref(),
            Some("CN=alice, DNS=alice.example, URI=spiffe://prod/alice")
        );
    }

    #[test]
    fn a_certificate_without_names_is_identified_by_serial() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, 0xab]));
        assert_eq!(identity_of(&cert(&params)).as_deref(), Some("serial=01ab"));
    }

    #[test]
    fn truncated_der_is_not_a_name() {
        assert_eq!(common_name(&[0x31, 0x05, 0x30]), None);
        assert_eq!(common_name(&[0x31, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
