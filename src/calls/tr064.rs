//! Placing a call from the user's own FRITZ!Box (TR-064, the box's SOAP interface on port
//! 49000): `X_AVM-DE_DialNumber` of the service `urn:dslforum-org:service:X_VoIP:1` at the
//! control URL `/upnp/control/x_voip`, with HTTP digest authentication. The box rings the
//! handset chosen for its dialing help (`X_AVM-DE_DialSetConfig`); when it is picked up the
//! box dials. The box's "dialing help" (Wählhilfe) must be on. As in AVM's "TR-064 X_VoIP"
//! service description.

use std::time::Duration;

const SERVICE: &str = "urn:dslforum-org:service:X_VoIP:1";
const CONTROL_URL: &str = "/upnp/control/x_voip";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tr064Config {
    /// `http://fritz.box:49000`
    pub base: String,
    pub username: String,
    pub password: String,
    /// The handset to ring (its name on the box, e.g. `FRITZ!Fon C6`); `None`: the box's
    /// current dialing-help handset.
    pub handset: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Tr064Error {
    #[error("cannot reach the FRITZ!Box at {base}: {detail}")]
    Unreachable { base: String, detail: String },
    #[error(
        "the FRITZ!Box refused the user name or password (TR-064 access needs a box user with the right \"FRITZ!Box settings\")"
    )]
    Auth,
    #[error(
        "the FRITZ!Box refused to dial ({code}: {description}): turn on its dialing help \
         (Telefonie → Anrufe → Wählhilfe) and check the handset"
    )]
    Refused { code: String, description: String },
    #[error("the FRITZ!Box answered something unexpected (HTTP {0})")]
    Unexpected(u16),
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn envelope(action: &str, args: &[(&str, &str)]) -> String {
    let args: String = args.iter().map(|(k, v)| format!("<{k}>{}</{k}>", xml_escape(v))).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\">\
         <s:Body><u:{action} xmlns:u=\"{SERVICE}\">{args}</u:{action}></s:Body></s:Envelope>"
    )
}

/// The text of `<tag>…</tag>` in a SOAP answer.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim())
}

/// One SOAP action, answering the box's digest challenge.
async fn soap(cfg: &Tr064Config, action: &str, args: &[(&str, &str)]) -> Result<String, Tr064Error> {
    let url = format!("{}{CONTROL_URL}", cfg.base.trim_end_matches('/'));
    let body = envelope(action, args);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Tr064Error::Unreachable { base: cfg.base.clone(), detail: e.to_string() })?;
    let request = |auth: Option<String>| {
        let mut r = http
            .post(&url)
            .header("Content-Type", "text/xml; charset=\"utf-8\"")
            .header("SOAPAction", format!("\"{SERVICE}#{action}\""))
            .body(body.clone());
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r
    };
    let unreachable =
        |e: reqwest::Error| Tr064Error::Unreachable { base: cfg.base.clone(), detail: e.to_string() };
    let mut resp = request(None).send().await.map_err(unreachable)?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get("WWW-Authenticate")
            .and_then(|h| h.to_str().ok())
            .ok_or(Tr064Error::Auth)?
            .to_string();
        let mut prompt = digest_auth::parse(&challenge).map_err(|_| Tr064Error::Auth)?;
        let context = digest_auth::AuthContext::new_post(
            cfg.username.as_str(),
            cfg.password.as_str(),
            CONTROL_URL,
            Some(body.as_bytes()),
        );
        let answer = prompt.respond(&context).map_err(|_| Tr064Error::Auth)?.to_header_string();
        resp = request(Some(answer)).send().await.map_err(unreachable)?;
    }
    let status = resp.status();
    let text = resp.text().await.map_err(unreachable)?;
    match status.as_u16() {
        200 => Ok(text),
        401 => Err(Tr064Error::Auth),
        500 => Err(Tr064Error::Refused {
            code: element(&text, "errorCode").unwrap_or("?").to_string(),
            description: element(&text, "errorDescription").unwrap_or("fault").to_string(),
        }),
        other => Err(Tr064Error::Unexpected(other)),
    }
}

/// Has the box ring the handset and, once it is picked up, dial `number` (as dialed on a
/// phone on the box).
pub async fn dial(cfg: &Tr064Config, number: &str) -> Result<(), Tr064Error> {
    if let Some(handset) = cfg.handset.as_deref().filter(|h| !h.trim().is_empty()) {
        soap(cfg, "X_AVM-DE_DialSetConfig", &[("NewX_AVM-DE_PhoneName", handset)]).await?;
    }
    let digits: String =
        number.chars().filter(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#')).collect();
    soap(cfg, "X_AVM-DE_DialNumber", &[("NewX_AVM-DE_PhoneNumber", &digits)]).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_and_faults() {
        let e = envelope("X_AVM-DE_DialNumber", &[("NewX_AVM-DE_PhoneNumber", "0151<&>")]);
        assert!(e.contains("<u:X_AVM-DE_DialNumber xmlns:u=\"urn:dslforum-org:service:X_VoIP:1\">"));
        assert!(e.contains("<NewX_AVM-DE_PhoneNumber>0151&lt;&amp;&gt;</NewX_AVM-DE_PhoneNumber>"));
        let fault = "<s:Fault><detail><UPnPError><errorCode>501</errorCode><errorDescription>Action Failed</errorDescription></UPnPError></detail></s:Fault>";
        assert_eq!(element(fault, "errorCode"), Some("501"));
        assert_eq!(element(fault, "nothing"), None);
    }
}
