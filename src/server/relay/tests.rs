//! The relay over real UDP sockets on loopback, spoken to as a TURN client would.

use super::*;
use std::net::Ipv4Addr;

/// Devices in running sessions: device → (user, other device).
#[derive(Default)]
struct Gate(Mutex<HashMap<i64, (i64, i64)>>);

impl SessionGate for Gate {
    fn session_peer(&self, device: i64) -> Option<(i64, i64)> {
        self.0.lock().get(&device).copied()
    }
}

impl Gate {
    fn pair(&self, a: (i64, i64), b: (i64, i64)) {
        let mut g = self.0.lock();
        g.insert(a.1, (a.0, b.1));
        g.insert(b.1, (b.0, a.1));
    }
}

struct Fixture {
    relay: Relay,
    gate: Arc<Gate>,
    secret: Secret,
    metrics: Arc<Metrics>,
}

async fn fixture(tweak: impl FnOnce(&mut RelayConfig)) -> Fixture {
    let crypto = rtc_crypto::default_provider().expect("crypto");
    let secret = Secret::new("test secret", crypto);
    let mut cfg = RelayConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ports: 40000..=40999,
        ..Default::default()
    };
    tweak(&mut cfg);
    let gate = Arc::new(Gate::default());
    let metrics = Arc::new(Metrics::new());
    let relay = Relay::start(cfg, secret.clone(), gate.clone(), metrics.clone()).await.expect("start");
    Fixture { relay, gate, secret, metrics }
}

/// A TURN client of one device, on its own socket.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

impl Client {
    async fn new(f: &Fixture, device: i64) -> Client {
        let c = f.secret.mint(device, unix_now(), 600);
        Client::with_credential(f, c.username, c.password).await
    }

    async fn with_credential(f: &Fixture, username: String, password: String) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Client {
            sock,
            server: f.relay.local_addr(),
            username,
            password,
            realm: String::new(),
            nonce: String::new(),
        }
    }

    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), self.sock.recv_from(&mut buf))
            .await
            .expect("an answer within 2 s")
            .expect("recv");
        buf.truncate(n);
        buf
    }

    async fn nothing(&self) {
        let mut buf = vec![0u8; 2048];
        let got = tokio::time::timeout(Duration::from_millis(300), self.sock.recv_from(&mut buf)).await;
        assert!(got.is_err(), "expected no packet");
    }

    /// Sends a request (authenticated once a nonce is known) and reads the answer.
    async fn request(&mut self, method: Method, extra: Vec<Box<dyn Setter>>) -> Message {
        for _ in 0..2 {
            let crypto = rtc_crypto::default_provider().expect("crypto");
            let mut setters: Vec<Box<dyn Setter + '_>> =
                vec![Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
            let mut extra_copy = Vec::new();
            for e in &extra {
                let mut tmp = Message::new();
                e.add_to(&mut tmp).expect("attribute");
                extra_copy.push(tmp);
            }
            let mut out = Message::new();
            out.build(&setters).expect("build");
            for t in &extra_copy {
                for a in &t.attributes.0 {
                    out.add(a.typ, &a.value);
                }
            }
            if !self.nonce.is_empty() {
                TextAttribute::new(ATTR_USERNAME, self.username.clone()).add_to(&mut out).expect("user");
                TextAttribute::new(ATTR_REALM, self.realm.clone()).add_to(&mut out).expect("realm");
                TextAttribute::new(ATTR_NONCE, self.nonce.clone()).add_to(&mut out).expect("nonce");
                let integrity = MessageIntegrity::new_long_term_integrity_with_provider(
                    self.username.clone(),
                    self.realm.clone(),
                    self.password.clone(),
                    crypto.crypto(),
                )
                .expect("key");
                integrity.add_to(&mut out).expect("integrity");
            }
            setters.clear();
            self.sock.send_to(&out.raw, self.server).await.expect("send");
            let mut m = Message::new();
            m.unmarshal_binary(&self.recv().await).expect("a STUN answer");
            if m.typ.class == CLASS_ERROR_RESPONSE && self.nonce.is_empty() {
                let realm = TextAttribute::get_from_as(&m, ATTR_REALM).expect("realm in the 401");
                let nonce = TextAttribute::get_from_as(&m, ATTR_NONCE).expect("nonce in the 401");
                assert_eq!(error_code(&m), 401);
                self.realm = realm.text;
                self.nonce = nonce.text;
                continue;
            }
            return m;
        }
        unreachable!("two tries")
    }

    async fn allocate(&mut self) -> Message {
        self.request(
            METHOD_ALLOCATE,
            vec![Box::new(RequestedTransport { protocol: rtc_turn::proto::PROTO_UDP })],
        )
        .await
    }

    async fn permit(&mut self, peer: SocketAddr) -> Message {
        self.request(
            METHOD_CREATE_PERMISSION,
            vec![Box::new(PeerAddress { ip: peer.ip(), port: peer.port() })],
        )
        .await
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut out = Message::new();
        out.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(PeerAddress { ip: peer.ip(), port: peer.port() }),
            Box::new(Data(data.to_vec())),
        ])
        .expect("build");
        self.sock.send_to(&out.raw, self.server).await.expect("send");
    }
}

fn error_code(m: &Message) -> u16 {
    let v = m.get(ATTR_ERROR_CODE).expect("an error code");
    u16::from(v[2] & 0x7) * 100 + u16::from(v[3])
}

fn relayed(m: &Message) -> SocketAddr {
    assert_eq!(m.typ.class, CLASS_SUCCESS_RESPONSE, "allocation refused: {:?}", m.get(ATTR_ERROR_CODE));
    let mut r = RelayedAddress::default();
    r.get_from(m).expect("XOR-RELAYED-ADDRESS");
    SocketAddr::new(r.ip, r.port)
}

fn refusals(f: &Fixture, reason: &'static str) -> u64 {
    f.metrics.relay_refusals.get_or_create(&vec![("reason", reason)]).get()
}

#[tokio::test]
async fn binding_requests_answer_the_mapped_address() {
    let f = fixture(|_| {}).await;
    let c = Client::new(&f, 1).await;
    let mut out = Message::new();
    out.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)]).expect("build");
    c.sock.send_to(&out.raw, c.server).await.expect("send");
    let mut m = Message::new();
    m.unmarshal_binary(&c.recv().await).expect("answer");
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&m).expect("mapped");
    assert_eq!(SocketAddr::new(mapped.ip, mapped.port), c.sock.local_addr().expect("addr"));
}

#[tokio::test]
async fn two_session_partners_relay_to_each_other_and_nobody_else() {
    let f = fixture(|_| {}).await;
    f.gate.pair((10, 1), (20, 2));
    f.gate.0.lock().insert(3, (30, 99)); // a device in another session
    let (mut a, mut b, mut x) =
        (Client::new(&f, 1).await, Client::new(&f, 2).await, Client::new(&f, 3).await);
    let (ra, rb, rx) =
        (relayed(&a.allocate().await), relayed(&b.allocate().await), relayed(&x.allocate().await));
    assert_eq!(f.relay.allocations(), 3);
    for (c, peer) in [(&mut a, rb), (&mut b, ra), (&mut x, rb)] {
        assert_eq!(c.permit(peer).await.typ.class, CLASS_SUCCESS_RESPONSE);
    }
    a.send_indication(rb, b"hello b").await;
    let got = b.recv().await;
    let mut m = Message::new();
    m.unmarshal_binary(&got).expect("a Data indication");
    let (mut from, mut data) = (PeerAddress::default(), Data::default());
    from.get_from(&m).expect("peer");
    data.get_from(&m).expect("data");
    assert_eq!((SocketAddr::new(from.ip, from.port), data.0.as_slice()), (ra, &b"hello b"[..]));
    // The device of another session cannot reach b's allocation, nor a the third one.
    x.send_indication(rb, b"intruder").await;
    b.nothing().await;
    a.send_indication(rx, b"stray").await;
    x.nothing().await;
    assert!(f.metrics.relay_dropped.get_or_create(&vec![("reason", "not_session_peer")]).get() >= 2);
    // Nor the server's other ports on the relay address.
    a.send_indication(SocketAddr::new(ra.ip(), 9), b"to the server").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(f.metrics.relay_dropped.get_or_create(&vec![("reason", "server_address")]).get() >= 1);
    assert!(f.metrics.relay_bytes.get_or_create(&vec![("way", "to_peer")]).get() >= 7);
}

#[tokio::test]
async fn wrong_expired_and_other_device_credentials_are_refused() {
    let f = fixture(|_| {}).await;
    f.gate.pair((10, 1), (20, 2));
    let good = f.secret.mint(1, unix_now(), 600);
    let mut wrong = Client::with_credential(&f, good.username.clone(), "not the password".into()).await;
    assert_eq!(error_code(&wrong.allocate().await), 401);
    let old = f.secret.mint(1, unix_now() - 700, 600);
    let mut expired = Client::with_credential(&f, old.username, old.password).await;
    assert_eq!(error_code(&expired.allocate().await), 401);
    let forged = format!("{}:2", good.username.split(':').next().expect("expiry"));
    let mut other = Client::with_credential(&f, forged, good.password).await;
    assert_eq!(error_code(&other.allocate().await), 401, "device 1's password does not fit device 2");
    assert_eq!(refusals(&f, "wrong_credentials"), 3);
    assert_eq!(f.relay.allocations(), 0);
}

#[tokio::test]
async fn no_session_no_allocation_and_the_session_end_ends_it() {
    let f = fixture(|_| {}).await;
    let mut a = Client::new(&f, 1).await;
    let m = a.allocate().await;
    assert_eq!(error_code(&m), 403);
    assert_eq!(refusals(&f, "no_session"), 1);
    f.gate.pair((10, 1), (20, 2));
    relayed(&a.allocate().await);
    assert_eq!(f.relay.allocations(), 1);
    f.gate.0.lock().clear();
    for _ in 0..30 {
        if f.relay.allocations() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the allocation outlived its session");
}

#[tokio::test]
async fn loopback_private_and_other_peers_are_refused_by_default() {
    let f = fixture(|_| {}).await;
    f.gate.pair((10, 1), (20, 2));
    let mut a = Client::new(&f, 1).await;
    relayed(&a.allocate().await);
    for peer in ["127.0.0.2:5000", "10.0.0.8:5000", "192.168.1.2:5000", "100.64.1.1:5000", "224.0.0.1:5000"] {
        let m = a.permit(peer.parse().expect("addr")).await;
        assert_eq!(error_code(&m), 403, "{peer}");
    }
    assert_eq!(refusals(&f, "loopback"), 1);
    assert_eq!(refusals(&f, "private"), 2);
    assert_eq!(refusals(&f, "cgnat"), 1);
    assert_eq!(refusals(&f, "multicast"), 1);
    assert_eq!(a.permit("8.8.8.8:53".parse().expect("addr")).await.typ.class, CLASS_SUCCESS_RESPONSE);
}

#[tokio::test]
async fn allocations_per_user_are_capped() {
    let f = fixture(|c| c.max_allocations_per_user = 2).await;
    f.gate.pair((10, 1), (20, 2));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::new(&f, 1).await);
    }
    relayed(&clients[0].allocate().await);
    relayed(&clients[1].allocate().await);
    assert_eq!(error_code(&clients[2].allocate().await), 486);
    assert_eq!(refusals(&f, "quota"), 1);
    // Another user is not affected.
    let mut b = Client::new(&f, 2).await;
    relayed(&b.allocate().await);
}

#[tokio::test]
async fn one_users_flood_is_cut_at_its_bandwidth_and_another_user_goes_on() {
    let f = fixture(|c| c.user_bandwidth = 20_000).await;
    f.gate.pair((10, 1), (20, 2));
    let (mut a, mut b) = (Client::new(&f, 1).await, Client::new(&f, 2).await);
    let (ra, rb) = (relayed(&a.allocate().await), relayed(&b.allocate().await));
    a.permit(rb).await;
    b.permit(ra).await;
    // a floods 200 KB at once: about a tenth gets through.
    for _ in 0..200 {
        a.send_indication(rb, &[7u8; 1000]).await;
    }
    let mut got = 0;
    let mut buf = vec![0u8; 2048];
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), b.sock.recv_from(&mut buf)).await {
        got += 1;
    }
    assert!((10..=40).contains(&got), "{got} of 200 packets relayed");
    let dropped = f.metrics.relay_dropped.get_or_create(&vec![("reason", "bandwidth")]).get();
    // (Some of the flood may already be lost in the listener's socket buffer.)
    assert!(dropped >= 50, "{dropped} dropped for bandwidth, {got} relayed");
    // b's own traffic (user 20) still flows.
    b.send_indication(ra, b"still here").await;
    let mut m = Message::new();
    m.unmarshal_binary(&a.recv().await).expect("data");
}

#[tokio::test]
async fn refresh_with_lifetime_zero_ends_the_allocation_and_garbage_is_ignored() {
    let f = fixture(|_| {}).await;
    f.gate.pair((10, 1), (20, 2));
    let mut a = Client::new(&f, 1).await;
    relayed(&a.allocate().await);
    a.sock.send_to(b"\x00\x01\x00\x00garbage that is not STUN", a.server).await.expect("send");
    a.sock.send_to(&[0x40, 0x00, 0xff, 0xff, 1, 2], a.server).await.expect("send");
    let m = a.request(METHOD_REFRESH, vec![Box::new(Lifetime(Duration::ZERO))]).await;
    assert_eq!(m.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(f.relay.allocations(), 0);
}
