//! gRPC over TLS (rustls) with certificates made here by rcgen: a CA, the daemon's
//! certificate for 127.0.0.1, and a client certificate for mutual TLS.
use std::path::{Path, PathBuf};

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use relist_core::fingerprint::DecodeLimits;
use relist_proto::api::pb;
use relist_proto::transport::Connection;
use relist_server::grpc::ServerOptions;

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from another CA, which the daemon must refuse.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn new_ca() -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(names: &[&str], ca: &rcgen::Certificate, ca_key: &KeyPair, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca, ca_key)
        .unwrap();
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pki(dir: &Path) -> Pki {
    let (ca_cert, ca_key) = new_ca();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], &ca_cert, &ca_key, dir, "server");
    let (client_cert, client_key) = leaf(&["client"], &ca_cert, &ca_key, dir, "client");
    let (other_ca, other_key) = new_ca();
    let (stranger_cert, stranger_key) = leaf(&["stranger"], &other_ca, &other_key, dir, "stranger");
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
        stranger_cert,
        stranger_key,
    }
}

async fn clear_check(conn: &Connection, addr: &str) -> anyhow::Result<pb::CheckListingResponse> {
    let mut c = conn.connect(addr, 64 << 20).await?;
    Ok(c.check_listing(pb::CheckListingRequest {
        listing: Some(listing("shopee", "1", "", "tas kulit", vec![])),
        ..Default::default()
    })
    .await?
    .into_inner())
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());

    // Server TLS only.
    let options = ServerOptions {
        tls: Some(relist_proto::transport::server_tls(&p.server_cert, &p.server_key, None).unwrap()),
        ..Default::default()
    };
    let server = TestServer::start_full(&tmp.path().join("d1"), DecodeLimits::default(), options, false).await;
    let addr = format!("https://{}", server.addr);
    let trusting = Connection {
        tls_ca: Some(p.ca.clone()),
        ..Default::default()
    };
    let r = clear_check(&trusting, &addr).await.expect("TLS call with the CA");
    assert_eq!(r.verdict, pb::Verdict::Clear as i32);
    // An http:// address with --tls-ca still speaks TLS.
    clear_check(&trusting, &format!("http://{}", server.addr))
        .await
        .expect("--tls-ca implies TLS");
    // Plaintext and an untrusting client fail.
    assert!(clear_check(&Connection::default(), &format!("http://{}", server.addr))
        .await
        .is_err());
    assert!(
        clear_check(&Connection::default(), &addr).await.is_err(),
        "public roots do not know our CA"
    );
    server.stop().await;

    // Mutual TLS: a client certificate from the configured CA is required.
    let options = ServerOptions {
        tls: Some(relist_proto::transport::server_tls(&p.server_cert, &p.server_key, Some(&p.ca)).unwrap()),
        ..Default::default()
    };
    let server = TestServer::start_full(&tmp.path().join("d2"), DecodeLimits::default(), options, false).await;
    let addr = format!("https://{}", server.addr);
    assert!(clear_check(&trusting, &addr).await.is_err(), "no client certificate");
    let stranger = Connection {
        tls_cert: Some(p.stranger_cert.clone()),
        tls_key: Some(p.stranger_key.clone()),
        ..trusting.clone()
    };
    assert!(
        clear_check(&stranger, &addr).await.is_err(),
        "client certificate of another CA"
    );
    let client = Connection {
        tls_cert: Some(p.client_cert.clone()),
        tls_key: Some(p.client_key.clone()),
        ..trusting.clone()
    };
    clear_check(&client, &addr).await.expect("mTLS call");
    server.stop().await;
}

/// `relist serve --tls-cert/--tls-key/--tls-client-ca` and a client command with
/// `--tls-ca/--tls-cert/--tls-key`, through the real binary.
#[test]
fn the_binary_serves_and_calls_over_mutual_tls() {
    use std::process::Command;
    const BIN: &str = env!("CARGO_BIN_EXE_relist");
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let data = tmp.path().join("data");
    let daemon = Daemon::start(
        [
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--tls-cert".as_ref(),
            p.server_cert.as_os_str(),
            "--tls-key".as_ref(),
            p.server_key.as_os_str(),
            "--tls-client-ca".as_ref(),
            p.ca.as_os_str(),
        ] as [&std::ffi::OsStr; 10],
        "relist serving (TLS)",
    );
    let addr = daemon.addr.clone();
    let check = |client_cert: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "check",
            "--marketplace",
            "shopee",
            "--listing-id",
            "1",
            "--title",
            "tas",
            "--json",
        ])
        .arg("--addr")
        .arg(format!("https://{addr}"))
        .arg("--tls-ca")
        .arg(&p.ca);
        if client_cert {
            cmd.arg("--tls-cert")
                .arg(&p.client_cert)
                .arg("--tls-key")
                .arg(&p.client_key);
        }
        cmd.output().expect("run relist check")
    };
    let without = check(false);
    let with = check(true);
    drop(daemon);
    assert!(!without.status.success(), "mTLS needs a client certificate");
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let v: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(v["verdict"], "CLEAR");
}
