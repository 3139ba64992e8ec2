//! Asks a local model one question, with or without props, and prints the reply as it streams:
//! `cargo run -p improv-local --example ask -- <file.gguf> "question" [--tools] [--required]`.

use improv_kernel::{Message, Model, ModelUpdate, Request, ToolSpec};
use improv_local::{LocalConfig, LocalModel, ToolChoice};
use serde_json::json;
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(question)) = (args.first(), args.get(1)) else {
        eprintln!("usage: ask <file.gguf> <question> [--tools] [--required]");
        std::process::exit(2);
    };
    let mut config = LocalConfig::new(path);
    if args.iter().any(|a| a == "--required") {
        config.tool_choice = ToolChoice::Required;
    }
    if let Some(i) = args.iter().position(|a| a == "--bias") {
        config.tool_bias = args.get(i + 1).and_then(|b| b.parse().ok()).unwrap_or(0.0);
    }
    let model = LocalModel::load(config)?;
    let tools = if args.iter().any(|a| a == "--tools" || a == "--required") {
        vec![
            ToolSpec {
                name: "list".into(),
                description: "List the files in a folder.".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            },
            ToolSpec {
                name: "read".into(),
                description: "Read a file.".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            },
        ]
    } else {
        Vec::new()
    };
    let messages = [Message::user(question.as_str())];
    let request = Request {
        system: "You are a helpful assistant.",
        messages: &messages,
        tools: &tools,
        max_output_tokens: Some(128),
    };
    let reply = model
        .respond(request, &mut |u| {
            if let ModelUpdate::Text(t) = u {
                print!("{t}");
                let _ = std::io::stdout().flush();
            }
        })
        .await?;
    println!();
    for call in &reply.tool_calls {
        println!("call {} {}({})", call.id, call.name, call.arguments);
    }
    eprintln!("{:?} {:?}", reply.stop, reply.usage);
    Ok(())
}
