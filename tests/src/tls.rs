//! Test certificates made with the `openssl` command line: a CA, a server
//! certificate for `localhost`/127.0.0.1, a client certificate signed by the
//! CA, and one signed by another CA (that the server must refuse).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files written by [`make`].
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("openssl: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("openssl {args:?} failed"))
    }
}

fn ca(dir: &Path, name: &str) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
        ],
    )
}

fn signed(dir: &Path, name: &str, ca: &str, cn: &str, ext: &str) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    )?;
    std::fs::write(dir.join(format!("{name}.ext")), ext).map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

/// Makes the certificates in `dir`.
pub fn make(dir: &Path) -> Result<Certs, String> {
    ca(dir, "ca")?;
    ca(dir, "rogue-ca")?;
    signed(
        dir,
        "server",
        "ca",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    signed(
        dir,
        "client",
        "ca",
        "agent",
        "extendedKeyUsage=clientAuth\n",
    )?;
    signed(
        dir,
        "rogue",
        "rogue-ca",
        "agent",
        "extendedKeyUsage=clientAuth\n",
    )?;
    let f = |n: &str| dir.join(n);
    Ok(Certs {
        ca: f("ca.pem"),
        server_cert: f("server.pem"),
        server_key: f("server.key"),
        client_cert: f("client.pem"),
        client_key: f("client.key"),
        rogue_cert: f("rogue.pem"),
        rogue_key: f("rogue.key"),
    })
}
