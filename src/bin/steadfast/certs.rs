//! `steadfast certs`: a development CA plus node and client certificates for mutual TLS.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use steadfast::tls::{DevPki, TlsFiles};

use crate::output::out;

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca-key.pem, node.pem, node-key.pem, client.pem, client-key.pem.
    #[arg(long)]
    out: PathBuf,
    /// Host names and IP addresses the node certificate is valid for, comma separated: every
    /// address peers and clients dial.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    hosts: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// A name for the cluster, written into the certificates' common names.
    #[arg(long, default_value = "dev")]
    cluster: String,
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    if args.out.join("ca.pem").exists() {
        bail!(
            "{} already holds a CA; pick another directory (a new CA would not trust the \
             certificates it signed)",
            args.out.display()
        );
    }
    let pki = dev_pki(&args.cluster, &args.hosts, args.days)?;
    let (node, client) = pki.write_to(&args.out)?;
    out!(
        "wrote a development CA and certificates to {}",
        args.out.display()
    );
    out!("nodes:   {}", flags(&node));
    out!("clients: {}", flags(&client));
    out!(
        "keep ca-key.pem offline; node.pem is valid for {}",
        args.hosts.join(", ")
    );
    Ok(())
}

fn flags(files: &TlsFiles) -> String {
    format!(
        "--tls-cert {} --tls-key {} --tls-ca {}",
        files.cert.display(),
        files.key.display(),
        files.ca.display()
    )
}

/// A development CA valid from an hour ago (clock skew) for `days`.
pub fn dev_pki(cluster: &str, hosts: &[String], days: u32) -> anyhow::Result<DevPki> {
    anyhow::ensure!(
        (1..=36_500).contains(&days),
        "--days must be 1..=36500, not {days}"
    );
    let now = time::OffsetDateTime::now_utc();
    let until = now
        .checked_add(time::Duration::days(days.into()))
        .context("--days reaches past what a certificate can say")?;
    Ok(DevPki::generate(
        cluster,
        hosts,
        now - time::Duration::hours(1),
        until,
    )?)
}
