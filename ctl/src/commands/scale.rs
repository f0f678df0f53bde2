//! `kctl scale`: a merge patch of `spec.replicas` on the `scale` subresource.

use serde_json::json;

use crate::client::{self, MERGE_PATCH};
use crate::commands::parse_targets;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `TYPE NAME...` or `TYPE/NAME...`.
    #[arg(required = true, value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    pub replicas: u32,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let targets = parse_targets(&args.resources)?;
    let cluster = global.cluster().await?;
    for target in targets {
        if !target.info.has_subresource("scale") {
            return Err(Error::Usage(format!(
                "cannot scale {}: it has no scale subresource",
                target.info.plural
            )));
        }
        if target.names.is_empty() {
            return Err(Error::Usage(format!(
                "name the {} to scale",
                target.info.plural
            )));
        }
        for name in &target.names {
            let uri = client::with_query(
                &format!(
                    "{}/scale",
                    client::object_path(
                        target.info,
                        client::scoped(target.info, &cluster.namespace),
                        name
                    )
                ),
                &[("fieldManager", "kctl-scale")],
            );
            cluster
                .patch(
                    &uri,
                    MERGE_PATCH,
                    &json!({"spec": {"replicas": args.replicas}}),
                )
                .await?;
            out.line(format!("{}/{name} scaled", client::kind_group(target.info)))?;
        }
    }
    Ok(())
}
