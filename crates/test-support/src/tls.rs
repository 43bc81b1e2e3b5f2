//! Test certificates made by the `openssl` command (`scripts/test`
//! installs it): a fresh CA per call and a certificate it signed.

use std::{path::Path, process::Command};

/// A certificate for the subject alternative names `san` (e.g.
/// `DNS:localhost,IP:127.0.0.1`) and the extended key usages `usage`
/// (`serverAuth`, `clientAuth`), signed by a fresh test CA, made by the
/// openssl command in `dir`; `name` prefixes the files. Returns the paths of
/// the CA, the certificate and its key.
pub fn certificate_with(
    dir: &Path,
    name: &str,
    usage: &str,
    san: &str,
) -> (String, String, String) {
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    let (ca, ca_key, cert, key, csr, ext) = (
        file("ca.pem"),
        file("ca.key"),
        file("pem"),
        file("key"),
        file("csr"),
        file("ext"),
    );
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "30", "-subj", "/CN=Switchyard test CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", &ca_key, "-out", &ca])
        .collect(),
        [
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("the openssl command (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (ca, cert, key)
}
