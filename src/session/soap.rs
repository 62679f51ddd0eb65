//! SOAP-level session keys (the seed's WSO2 / Apache Synapse session kinds), read from the
//! first bytes of an envelope with a namespace-resolving XML reader (quick-xml): elements are
//! matched by namespace and local name, whatever their prefix; SOAP 1.1 and 1.2 both.
//!
//! - A request's key: `Envelope/Header/ServiceGroupId` (Axis2 SOAP session,
//!   `http://ws.apache.org/namespaces/axis2`), else `Envelope/Header/ClientID` (Synapse simple
//!   client session, `http://ws.apache.org/ns/synapse`).
//! - A response's server-initiated session: `Envelope/Header/ReplyTo/ReferenceParameters/
//!   ServiceGroupId` (WS-Addressing `http://www.w3.org/2005/08/addressing`).
//!
//! Only a `Header` that ends within the given bytes counts; anything that is not a well-formed
//! SOAP envelope up to there gives no key. Pure functions over a byte prefix: no I/O.

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const AXIS2: &str = "http://ws.apache.org/namespaces/axis2";
pub const SYNAPSE: &str = "http://ws.apache.org/ns/synapse";
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";

/// Longest key accepted (longer text is not a session id of ours to keep).
const MAX_KEY: usize = 512;

/// The session key a SOAP request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoapKey {
    /// Axis2's `ServiceGroupId` (server-initiated: pinned when a backend hands it out).
    ServiceGroup(String),
    /// Synapse's `ClientID` (client-initiated: pinned on the first request carrying it).
    Client(String),
}

/// One element on the path from the root: its namespace and local name.
type Step = (String, String);

/// The key of a request envelope starting with `prefix`.
pub fn request_key(prefix: &[u8]) -> Option<SoapKey> {
    let mut group = None;
    let mut client = None;
    walk(prefix, |path, text| match path {
        [env, hdr, (ns, local)] if is_header(env, hdr) => {
            if ns == AXIS2 && local == "ServiceGroupId" {
                group.get_or_insert_with(|| text.to_owned());
            } else if ns == SYNAPSE && local == "ClientID" {
                client.get_or_insert_with(|| text.to_owned());
            }
        }
        _ => {}
    })?;
    group.map(SoapKey::ServiceGroup).or(client.map(SoapKey::Client))
}

/// The `ServiceGroupId` a response envelope starting with `prefix` hands out.
pub fn response_service_group(prefix: &[u8]) -> Option<String> {
    let mut found = None;
    walk(prefix, |path, text| {
        if let [env, hdr, (ns1, reply_to), (ns2, params), (ns3, id)] = path {
            if is_header(env, hdr)
                && ns1 == WSA
                && reply_to == "ReplyTo"
                && ns2 == WSA
                && params == "ReferenceParameters"
                && ns3 == AXIS2
                && id == "ServiceGroupId"
            {
                found.get_or_insert_with(|| text.to_owned());
            }
        }
    })?;
    found
}

fn is_soap(ns: &str) -> bool {
    ns == SOAP11 || ns == SOAP12
}

/// `Envelope` / `Header` of one SOAP version.
fn is_header(env: &Step, hdr: &Step) -> bool {
    is_soap(&env.0) && env.1 == "Envelope" && hdr.0 == env.0 && hdr.1 == "Header"
}

/// Walk the envelope's `Header`, calling `leaf(path, text)` for each element holding only
/// text. `Some(())` once the Header ended (or the envelope has none before its Body);
/// `None` when the input is not a SOAP envelope, is malformed, or ends before that.
fn walk(prefix: &[u8], mut leaf: impl FnMut(&[Step], &str)) -> Option<()> {
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => t,
        // A prefix may cut a character in two at its end.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let mut reader = NsReader::from_str(text);
    let mut path: Vec<Step> = Vec::new();
    let mut content = String::new();
    let mut plain = true;
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        match event {
            Event::Start(e) => {
                let step = (namespace(&ns)?, e.local_name().as_ref().to_owned());
                match path.len() {
                    0 if !(is_soap(&step.0) && step.1 == "Envelope") => return None,
                    // The first child of the Envelope: its Header, or (no Header) the Body.
                    1 if step.1 != "Header" => return Some(()),
                    _ => {}
                }
                path.push(step);
                content.clear();
                plain = true;
            }
            Event::Empty(_) if path.is_empty() => return None,
            Event::Text(t) => content.push_str(&t.xml10_content()),
            Event::CData(c) => content.push_str(&c),
            Event::GeneralRef(_) => plain = false,
            Event::End(_) => {
                let ended = path.len();
                let value = content.trim();
                if plain && !value.is_empty() && value.len() <= MAX_KEY && !value.contains(char::is_control) {
                    leaf(&path, value);
                }
                content.clear();
                path.pop();
                if ended <= 2 {
                    return Some(()); // the Header (or the Envelope) ended
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn namespace(ns: &ResolveResult<'_>) -> Option<String> {
    match ns {
        ResolveResult::Bound(Namespace(n)) => Some((*n).to_owned()),
        ResolveResult::Unbound => Some(String::new()),
        // An undeclared prefix: not well-formed with namespaces.
        ResolveResult::Unknown(_) => None,
    }
}

#[cfg(test)]
mod tests;
