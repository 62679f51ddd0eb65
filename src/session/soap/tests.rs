use super::*;

const S11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const S12: &str = "http://www.w3.org/2003/05/soap-envelope";

fn envelope(soap: &str, prefix: &str, header: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<{prefix}:Envelope xmlns:{prefix}="{soap}"><{prefix}:Header>{header}</{prefix}:Header><{prefix}:Body><m:echo xmlns:m="urn:x">hi</m:echo></{prefix}:Body></{prefix}:Envelope>"#
    )
}

#[test]
fn axis2_service_group_id_in_soap11_and_12_whatever_the_prefix() {
    for (soap, prefix) in [(S11, "soapenv"), (S12, "env"), (S11, "s")] {
        let h = r#"<axis2:ServiceGroupId xmlns:axis2="http://ws.apache.org/namespaces/axis2">urn:uuid:ABC-1</axis2:ServiceGroupId>"#;
        let key = request_key(envelope(soap, prefix, h).as_bytes());
        assert_eq!(key, Some(SoapKey::ServiceGroup("urn:uuid:ABC-1".into())), "{soap} {prefix}");
    }
}

#[test]
fn a_default_namespace_works_as_well_as_a_prefix() {
    let h = r#"<ServiceGroupId xmlns="http://ws.apache.org/namespaces/axis2"> id-2 </ServiceGroupId>"#;
    assert_eq!(request_key(envelope(S12, "e", h).as_bytes()), Some(SoapKey::ServiceGroup("id-2".into())));
}

#[test]
fn synapse_client_id() {
    let h = r#"<syn:ClientID xmlns:syn="http://ws.apache.org/ns/synapse">client-7</syn:ClientID>"#;
    assert_eq!(request_key(envelope(S11, "soap", h).as_bytes()), Some(SoapKey::Client("client-7".into())));
}

#[test]
fn the_right_local_name_in_the_wrong_namespace_is_not_a_key() {
    let h = r#"<x:ServiceGroupId xmlns:x="urn:other">nope</x:ServiceGroupId><ClientID>nope</ClientID>"#;
    assert_eq!(request_key(envelope(S11, "soap", h).as_bytes()), None);
}

#[test]
fn a_key_outside_the_header_or_nested_deeper_is_not_a_key() {
    let body = format!(
        r#"<s:Envelope xmlns:s="{S11}"><s:Header><w:Wrap xmlns:w="urn:w"><a:ServiceGroupId xmlns:a="http://ws.apache.org/namespaces/axis2">deep</a:ServiceGroupId></w:Wrap></s:Header><s:Body/></s:Envelope>"#
    );
    assert_eq!(request_key(body.as_bytes()), None);
    let in_body = format!(
        r#"<s:Envelope xmlns:s="{S11}"><s:Body><a:ServiceGroupId xmlns:a="http://ws.apache.org/namespaces/axis2">b</a:ServiceGroupId></s:Body></s:Envelope>"#
    );
    assert_eq!(request_key(in_body.as_bytes()), None);
}

#[test]
fn not_soap_not_xml_malformed_or_truncated_gives_no_key() {
    let h = r#"<a:ServiceGroupId xmlns:a="http://ws.apache.org/namespaces/axis2">k</a:ServiceGroupId>"#;
    let whole = envelope(S11, "s", h);
    let cut = whole.find("</s:Header>").unwrap();
    for bad in [
        "",
        "not xml at all",
        "{\"json\": true}",
        r#"<Envelope xmlns="urn:not-soap"><Header><a:ServiceGroupId xmlns:a="http://ws.apache.org/namespaces/axis2">k</a:ServiceGroupId></Header></Envelope>"#,
        &whole[..cut],
        &whole[..cut - 5],
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Header><x:Id>1</s:Header>",
        "<u:Envelope><u:Header/></u:Envelope>",
    ] {
        assert_eq!(request_key(bad.as_bytes()), None, "{bad:?}");
    }
    assert!(request_key(&[0xff, 0xfe, 0x00, 0x3c]).is_none(), "not UTF-8");
    assert!(request_key(whole.as_bytes()).is_some(), "the whole envelope has its key");
}

#[test]
fn the_response_service_group_comes_from_reply_to_reference_parameters() {
    let h = r#"<wsa:ReplyTo xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address><wsa:ReferenceParameters><axis2:ServiceGroupId xmlns:axis2="http://ws.apache.org/namespaces/axis2">urn:uuid:SG-9</axis2:ServiceGroupId></wsa:ReferenceParameters></wsa:ReplyTo>"#;
    for soap in [S11, S12] {
        assert_eq!(response_service_group(envelope(soap, "soapenv", h).as_bytes()).as_deref(), Some("urn:uuid:SG-9"));
    }
    let bare = r#"<axis2:ServiceGroupId xmlns:axis2="http://ws.apache.org/namespaces/axis2">x</axis2:ServiceGroupId>"#;
    assert_eq!(response_service_group(envelope(S11, "s", bare).as_bytes()), None, "only inside ReplyTo");
}

#[test]
fn an_envelope_without_header_has_no_key() {
    let body = format!(r#"<s:Envelope xmlns:s="{S11}"><s:Body><x/></s:Body></s:Envelope>"#);
    assert_eq!(request_key(body.as_bytes()), None);
}
