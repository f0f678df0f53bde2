//! `berth-cni`: the CNI plugin binary. See `berth_cni::plugin`.

use std::io::{Read, Write};

fn main() {
    let vars = std::env::vars().collect();
    let mut stdin = Vec::new();
    let version = |input: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(input)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(String::from))
            .unwrap_or_else(|| "1.0.0".into())
    };
    let result = berth_cni::plugin::Env::from_vars(&vars).and_then(|env| {
        if env.command != "VERSION" {
            std::io::stdin()
                .read_to_end(&mut stdin)
                .map_err(|e| berth_cni::plugin::Error::Config(format!("reading stdin: {e}")))?;
        }
        berth_cni::plugin::run(&env, &stdin)
    });
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version(&stdin)));
            std::process::exit(1);
        }
    }
}
