// The reference side of tests/tokenizer/run_tokenizer_test.sh: encodes and decodes the corpus with
// the `tokenizers` npm package (the Rust library's Node binding) and, as a cross-check, with
// @huggingface/tokenizers (JavaScript). Usage: node reference.js NODE_MODULES TOKENIZER.json
// CORPUS.json OUT.json. Or: node reference.js NODE_MODULES TOKENIZER.json --file TEXT OUT.json
// (ids of a whole file with special tokens, its decode, and the encode time in seconds on one
// thread, for `longctx bench tokenize`). Corpus entries are {"text": s} or {"hex": bytes}; bytes are turned into a
// string as Node does (ill-formed UTF-8 -> U+FFFD per maximal subpart), the input the library gets.
const path = require('path');
const fs = require('fs');
const [nodeModules, tokPath, corpusPath, outPath, fileOut] = process.argv.slice(2);
const { Tokenizer } = require(path.join(nodeModules, 'tokenizers'));

async function encodeFile() {
  const tok = Tokenizer.fromFile(tokPath);
  const text = fs.readFileSync(outPath).toString('utf8');
  const t0 = process.hrtime.bigint();
  const enc = await tok.encode(text, null, { addSpecialTokens: true });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const ids = Array.from(enc.getIds());
  const decoded = await tok.decode(ids, false);
  fs.writeFileSync(fileOut, JSON.stringify({ ids, decoded, seconds, bytes: Buffer.byteLength(text) }));
}

(async () => {
  if (corpusPath === '--file') return encodeFile();
  const corpus = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
  const tok = Tokenizer.fromFile(tokPath);
  let js = null;
  try {
    const mod = await import(path.join(nodeModules, '@huggingface/tokenizers/dist/tokenizers.mjs'));
    const cfgPath = path.join(path.dirname(tokPath), 'tokenizer_config.json');
    const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, 'utf8')) : {};
    js = new mod.Tokenizer(JSON.parse(fs.readFileSync(tokPath, 'utf8')), cfg);
  } catch (e) {
    console.error(`reference.js: @huggingface/tokenizers unavailable: ${e.message}`);
  }
  const out = [];
  for (const item of corpus) {
    const text = item.text !== undefined ? item.text : Buffer.from(item.hex, 'hex').toString('utf8');
    const r = {};
    for (const special of [true, false]) {
      const enc = await tok.encode(text, null, { addSpecialTokens: special });
      const ids = Array.from(enc.getIds());
      r[special ? 'ids_special' : 'ids'] = ids;
      if (special) {
        r.decoded = await tok.decode(ids, false);
        r.decoded_skip = await tok.decode(ids, true);
      }
      if (js && !special) {
        try {
          r.js_ids = js.encode(text, { add_special_tokens: false }).ids;
        } catch (e) {
          r.js_error = String(e.message);
        }
      }
    }
    r.text = text;
    out.push(r);
  }
  fs.writeFileSync(outPath, JSON.stringify(out));
})().catch((e) => {
  console.error(`reference.js: ${e.stack}`);
  process.exit(1);
});
