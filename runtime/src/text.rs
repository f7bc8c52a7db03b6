//! Text: the Hugging Face tokenizer of a model directory and its chat template.

pub mod chat_template;
pub mod tokenizer;

pub use chat_template::{ChatRequest, ChatTemplate};
pub use tokenizer::TextTokenizer;
