//! `kctl version`: kctl's own version and the server's `/version`.

use serde_json::json;

use crate::error::{Error, Result};
use crate::output::Output;
use crate::printer::{self, Format};
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the client version; do not contact the server.
    #[arg(long)]
    pub client: bool,
    /// `json` or `yaml`.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub const CLIENT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let client = json!({"gitVersion": CLIENT_VERSION, "program": "kctl"});
    let server = if args.client {
        None
    } else {
        Some(global.cluster().await?.get("/version").await?)
    };
    match args.output.as_deref() {
        None => {
            out.line(format!("Client Version: {CLIENT_VERSION} (kctl)"))?;
            if let Some(server) = server {
                out.line(format!(
                    "Server Version: {}",
                    server["gitVersion"].as_str().unwrap_or("unknown")
                ))?;
            }
            Ok(())
        }
        Some(format @ ("json" | "yaml")) => {
            let mut value = json!({"clientVersion": client});
            if let Some(server) = server {
                value["serverVersion"] = server;
            }
            let format: Format = format.parse()?;
            out.text(&printer::render_object(&format, &value)?)
        }
        Some(other) => Err(Error::Usage(format!(
            "--output must be 'yaml' or 'json', not {other:?}"
        ))),
    }
}
