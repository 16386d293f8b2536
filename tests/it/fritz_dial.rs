//! Placing a call from the user's own FRITZ!Box over TR-064, against a simulator of the box's
//! SOAP interface (no FRITZ!Box here): `POST /upnp/control/x_voip` with a `SOAPAction` of
//! `urn:dslforum-org:service:X_VoIP:1#X_AVM-DE_DialNumber`, HTTP digest authentication
//! (a 401 with `WWW-Authenticate: Digest realm="F!Box SOAP-Auth", nonce=…, qop="auth"`
//! first), and a SOAP fault (UPnPError 501) when the dialing help is off — as in AVM's TR-064
//! documentation of the X_VoIP service.

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sidecall::calls::tr064::{self, Tr064Config, Tr064Error};
use std::sync::Arc;
use tokio::sync::Mutex;

const REALM: &str = "F!Box SOAP-Auth";
const NONCE: &str = "6D0A2F6B0C2E3C1F";

#[derive(Default)]
struct Box_ {
    /// Numbers dialed, and handsets chosen, in order.
    actions: Vec<(String, String)>,
    dialing_help: bool,
}

/// Whether the request carries a digest answer for `user`/`password` (recomputed here).
fn authorized(headers: &HeaderMap, body: &str, user: &str, password: &str) -> bool {
    let Some(auth) = headers.get("Authorization").and_then(|h| h.to_str().ok()) else { return false };
    let Ok(header) = digest_auth::AuthorizationHeader::parse(auth) else { return false };
    if header.username != user || header.nonce != NONCE {
        return false;
    }
    let context =
        digest_auth::AuthContext::new_post(user, password, "/upnp/control/x_voip", Some(body.as_bytes()));
    let mut expected = header.clone();
    expected.digest(&context);
    expected.response == header.response
}

fn element(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

async fn start_box(state: Arc<Mutex<Box_>>) -> String {
    let app = axum::Router::new().route(
        "/upnp/control/x_voip",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                if !authorized(&headers, &body, "sidecall", "box-pass") {
                    let challenge = format!("Digest realm=\"{REALM}\", nonce=\"{NONCE}\", algorithm=MD5, qop=\"auth\"");
                    return (StatusCode::UNAUTHORIZED, [("WWW-Authenticate", challenge)], String::new()).into_response();
                }
                let action = headers.get("SOAPAction").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
                let mut b = state.lock().await;
                if action.ends_with("#X_AVM-DE_DialSetConfig\"") {
                    b.actions.push(("handset".into(), element(&body, "NewX_AVM-DE_PhoneName")));
                } else if action.ends_with("#X_AVM-DE_DialNumber\"") {
                    if !b.dialing_help {
                        let fault = "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>501</errorCode><errorDescription>Action Failed</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>";
                        return (StatusCode::INTERNAL_SERVER_ERROR, fault.to_string()).into_response();
                    }
                    b.actions.push(("dial".into(), element(&body, "NewX_AVM-DE_PhoneNumber")));
                } else {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "unknown action".to_string()).into_response();
                }
                let ok = "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><u:X_AVM-DE_DialNumberResponse xmlns:u=\"urn:dslforum-org:service:X_VoIP:1\"></u:X_AVM-DE_DialNumberResponse></s:Body></s:Envelope>";
                (StatusCode::OK, ok.to_string()).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_box_dials_from_the_chosen_handset_with_digest_auth() {
    sidecall::tls::install_default_provider();
    let state = Arc::new(Mutex::new(Box_ { dialing_help: true, ..Default::default() }));
    let base = start_box(state.clone()).await;
    let cfg = Tr064Config {
        base: base.clone(),
        username: "sidecall".into(),
        password: "box-pass".into(),
        handset: Some("FRITZ!Fon C6".into()),
    };
    tr064::dial(&cfg, "0151 2345-6789").await.expect("dialed");
    assert_eq!(
        state.lock().await.actions,
        vec![
            ("handset".to_string(), "FRITZ!Fon C6".to_string()),
            ("dial".to_string(), "015123456789".to_string())
        ]
    );
    // A wrong password, and the dialing help turned off, are told apart.
    let wrong = Tr064Config { password: "nope".into(), ..cfg.clone() };
    assert!(matches!(tr064::dial(&wrong, "0151").await, Err(Tr064Error::Auth)));
    state.lock().await.dialing_help = false;
    let refused = tr064::dial(&Tr064Config { handset: None, ..cfg }, "0151").await;
    assert!(matches!(&refused, Err(Tr064Error::Refused { code, .. }) if code == "501"), "{refused:?}");
    assert!(refused.err().map(|e| e.to_string()).unwrap_or_default().contains("dialing help"));
}
