//! `kctl config use-context | current-context | get-contexts`: kubeconfig files only, no
//! cluster.

use crate::error::{Error, Result};
use crate::kubeconfig;
use crate::output::Output;
use crate::printer::render_table;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Make a context the current one.
    UseContext {
        /// The context's name.
        name: String,
    },
    /// Print the current context.
    CurrentContext,
    /// List the contexts.
    GetContexts,
}

pub fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let paths = kubeconfig::paths_from_env(global.kubeconfig.as_deref());
    match args.what {
        What::UseContext { name } => {
            let path = kubeconfig::file_to_edit(&paths)?;
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.display().to_string(),
                source,
            })?;
            let edited = kubeconfig::set_current_context(&text, &name).map_err(|message| {
                Error::Kubeconfig {
                    path: path.clone(),
                    message,
                }
            })?;
            std::fs::write(&path, edited).map_err(|source| Error::Write {
                path: path.display().to_string(),
                source,
            })?;
            out.line(format!("Switched to context {name:?}."))
        }
        What::CurrentContext => {
            let config = kubeconfig::load(&paths, global.kubeconfig.is_some())?;
            match config.current_context {
                Some(c) if !c.is_empty() => out.line(c),
                _ => Err(Error::Config("current-context is not set".into())),
            }
        }
        What::GetContexts => {
            let config = kubeconfig::load(&paths, global.kubeconfig.is_some())?;
            let current = config.current_context.clone().unwrap_or_default();
            let headers =
                ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"].map(str::to_string);
            let rows: Vec<Vec<String>> = config
                .contexts
                .iter()
                .map(|c| {
                    let ctx = c.context.clone().unwrap_or_default();
                    vec![
                        if c.name == current { "*" } else { "" }.to_string(),
                        c.name.clone(),
                        ctx.cluster,
                        ctx.user.unwrap_or_default(),
                        ctx.namespace.unwrap_or_default(),
                    ]
                })
                .collect();
            out.text(&render_table(&headers, &rows))
        }
    }
}
