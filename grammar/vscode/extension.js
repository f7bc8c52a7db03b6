// The VS Code client: starts `saferc lsp` for .safer files.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("saferc").get("path") || "saferc";
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "saferc",
    "saferc",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "safer" }] }
  );
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
