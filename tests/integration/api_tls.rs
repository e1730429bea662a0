//! HTTPS: `pinion server --tls-cert --tls-key` with a certificate signed by a test CA that
//! `openssl` makes (scripts/test.sh installs it); the CLI trusts the CA with `--ca-file`
//! and refuses the server without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::api::ApiServer;
use crate::common::*;

/// A test CA and a server certificate for 127.0.0.1 it signed; returns the CA file, the
/// server's certificate and its key (mode 0600).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=pinion test CA"],
            &["-keyout", &p("ca.key"), "-out", &p("ca.pem")],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-subj", "/CN=127.0.0.1"],
            &["-keyout", &p("key.pem"), "-out", &p("server.csr")],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("server.ext"),
        "-out",
        &p("cert.pem"),
    ]);
    let key = dir.join("key.pem");
    write_private(&key, &std::fs::read_to_string(&key).unwrap());
    (dir.join("ca.pem"), dir.join("cert.pem"), key)
}

fn cli(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("PINION_SERVER")
        .env_remove("PINION_CA_FILE")
        .output()
        .unwrap()
}

#[test]
fn the_api_over_https_is_trusted_with_the_ca_file_and_refused_without() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = certificates(dir.path());
    let db = dir.db();
    let server = ApiServer::start_full(
        &db,
        None,
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let other = dir.path().join("other.db");
    let trusted = cli(
        &other,
        &[
            "--server",
            &server.url,
            "--ca-file",
            ca.to_str().unwrap(),
            "list",
        ],
    );
    assert!(trusted.status.success(), "{trusted:?}");
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("ID"));

    let untrusted = cli(&other, &["--server", &server.url, "list"]);
    assert_eq!(untrusted.status.code(), Some(5), "{untrusted:?}");
    assert!(
        String::from_utf8_lossy(&untrusted.stderr)
            .to_lowercase()
            .contains("certificate"),
        "{untrusted:?}"
    );
    let plain = server.url.replace("https://", "http://");
    let cleartext = cli(&other, &["--server", &plain, "list"]);
    assert!(!cleartext.status.success(), "{cleartext:?}");
    assert!(!other.exists(), "the client never opened a database");
}

#[test]
fn a_tls_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("tls-perms");
    let (_, cert, key) = certificates(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cli(
        &dir.db(),
        &[
            "server",
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chmod 600"),
        "{o:?}"
    );
}
