//! `tls-floor PORT CA_FILE`: one native-tls handshake with 127.0.0.1:PORT (certificate
//! checked against CA_FILE plus the system roots, as mailpushd does), then prints VmRSS,
//! RssAnon and RssFile before and after. No IMAP, no D-Bus, no threads: what is left is the
//! TLS stack's own cost, the floor under any program that uses it.

use std::io::{Read, Write};

fn memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .filter(|l| ["VmRSS:", "RssAnon:", "RssFile:"].iter().any(|k| l.starts_with(k)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(ca)) = (args.next(), args.next()) else {
        eprintln!("usage: tls-floor PORT CA_FILE");
        std::process::exit(2);
    };
    let port: u16 = port.parse().expect("PORT");
    let ca = std::fs::read(ca).expect("CA_FILE");
    println!("before TLS: {}", memory());
    let mut builder = native_tls::TlsConnector::builder();
    builder.add_root_certificate(native_tls::Certificate::from_pem(&ca).expect("PEM"));
    let connector = builder.build().expect("connector");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut tls = connector.connect("localhost", tcp).expect("handshake");
    tls.write_all(b"hello\n").expect("write");
    let _ = tls.read(&mut [0u8; 16]);
    println!("after one handshake: {}", memory());
}
