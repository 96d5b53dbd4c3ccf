//! The test stand-in for Compute Optimizer as a program, for benchmarks and
//! for trying the exporter by hand against a local "AWS":
//!
//!     cargo run --release --example standin -- --accounts 10000 --listen 127.0.0.1:4566
//!     AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x compute-optimizer-exporter --config.file c.toml
//!
//! with `endpoint_url = "http://127.0.0.1:4566"` and a region in `c.toml`.
//! `--first-id` sets the first account ID (one stand-in per organisation,
//! each with accounts of its own).

#[path = "../tests/support/standin.rs"]
mod standin;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut accounts = 1000usize;
    let mut listen = "127.0.0.1:4566".to_owned();
    let mut first_id = 100_000_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--accounts", Some(v)) => accounts = v.parse().expect("--accounts takes a number"),
            ("--listen", Some(v)) => listen = v,
            ("--first-id", Some(v)) => first_id = v.parse().expect("--first-id takes a number"),
            _ => {
                eprintln!("usage: standin [--accounts N] [--listen ADDR] [--first-id ID]");
                std::process::exit(2);
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    let mut org = standin::org(accounts);
    for (i, account) in org.iter_mut().enumerate() {
        account.id = format!("{:012}", first_id + i as u64);
    }
    let s = standin::Standin::serve(listener, org).await;
    s.forget_requests();
    println!(
        "standin listening with {accounts} accounts: compute optimizer {}, sts {}, organizations {}, automation {}",
        s.url(),
        s.sts_url(),
        s.organizations_url(),
        s.automation_url()
    );
    let mut last = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let n = s.requests();
        if n != last {
            println!("requests so far: {n}");
            last = n;
        }
    }
}
