// `sft serve` on a real pretrained model, karpathy's stories260K, through the openai client: its greedy
// completion is the argmax of full forwards token by token (what `sft score` computes), what generate()
// (`sft chat`'s engine) gives, and continues "Once upon a time" as llama2.c's published sample does.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { ChatSession, stopSet } from '../../src/chat/session.js';
import { FifoScheduler } from '../../src/serve/scheduler.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { argmaxContinuation, generated, GREEDY } from './reference.js';
import { STORIES_REFERENCE, storiesModelDir } from './stories-model.js';

const found = await storiesModelDir();
const skip = 'skip' in found ? found.skip : false;
const CONTEXT = 512;

let served: LoadedModel;
let ref: LoadedModel;
let server: RunningServer;
let client: OpenAI;
type WithIds = { token_ids: number[] };

before(async () => {
  if (!('dir' in found)) return;
  served = await loadModel({ modelDir: found.dir });
  ref = await loadModel({ modelDir: found.dir });
  server = await startServer({
    ctx: { id: 'stories260K', tok: served.tok, template: served.template, maxContext: CONTEXT, vocabSize: served.native.vocabSize },
    scheduler: new FifoScheduler(served.model, served.tok),
    host: '127.0.0.1',
    port: 0,
  });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
});
after(() => server?.close());

test('stories260K: greedy completion = argmax of full forwards = generate(), and continues the published sample', { skip }, async () => {
  const prompt = 'Once upon a time';
  const promptIds = [ref.tok.bosId!, ...ref.tok.encode(prompt)];
  const eos = [ref.tok.eosId!];
  const r = await client.completions.create({ model: 'stories260K', prompt, max_tokens: 40, temperature: 0, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const choice = r.choices[0] as typeof r.choices[0] & WithIds;
  assert.deepEqual(choice.token_ids, await argmaxContinuation(ref.model, promptIds, 40, eos));
  assert.deepEqual(choice.token_ids, (await generated(ref.model, ref.tok, promptIds, { ...GREEDY, maxNewTokens: 40, stopIds: eos })).ids);
  assert.ok(STORIES_REFERENCE.startsWith(prompt + choice.text), JSON.stringify(choice.text));
  assert.ok(choice.text.length > 100, JSON.stringify(choice.text));
  assert.deepEqual(r.usage, { prompt_tokens: promptIds.length, completion_tokens: 40, total_tokens: promptIds.length + 40 });

  let streamed = '';
  for await (const c of await client.completions.create({ model: 'stories260K', prompt, max_tokens: 40, temperature: 0, stream: true })) streamed += c.choices[0].text;
  assert.equal(streamed, choice.text);
});

test('stories260K: greedy chat answer = sft chat\'s (ChatSession, llama2 template)', { skip }, async () => {
  const system = 'You tell short stories.';
  const user = 'Tell me about a dog.';
  const r = await client.chat.completions.create({
    model: 'stories260K',
    messages: [{ role: 'system', content: system }, { role: 'user', content: user }],
    max_tokens: 30,
    temperature: 0,
    return_token_ids: true,
  } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const template = ref.template;
  const session = new ChatSession(ref.model, ref.tok, { template, system, maxContext: CONTEXT, maxNewTokens: 30, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0 });
  ref.model.resetCache();
  const gen = session.send(user);
  let step = await gen.next();
  while (!step.done) step = await gen.next();
  const choice = r.choices[0] as typeof r.choices[0] & WithIds;
  assert.ok(step.value.text.length > 0);
  assert.equal(choice.message.content, step.value.text);
  const stopIds = stopSet(template, ref.tok, []).stopIds;
  assert.deepEqual(choice.token_ids.filter((id) => !stopIds.includes(id)), step.value.ids);
  assert.equal(choice.finish_reason, step.value.finishReason);
});
