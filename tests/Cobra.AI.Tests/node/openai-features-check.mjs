// The official openai npm client against the server over a Cobra-like scripted client: response_format, n,
// logprobs (streaming and not), refused parameters, /health and /metrics. Prints what it saw as JSON.
// Env: BASE_URL (…/v1), API_KEY.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 });
const messages = [{ role: 'user', content: 'Describe the image as JSON.' }];
const out = {};

const schema = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'], additionalProperties: false };
out.jsonSchema = (await client.chat.completions.create({ model: 'cobra+3b', messages, response_format: { type: 'json_schema', json_schema: { name: 'thing', strict: true, schema } } })).choices.length;
out.jsonObject = (await client.chat.completions.create({ model: 'cobra+3b', messages, response_format: { type: 'json_object' } })).choices.length;

const many = await client.chat.completions.create({ model: 'cobra+3b', messages, n: 3, logprobs: true, top_logprobs: 2 });
out.choices = many.choices.map(c => ({ index: c.index, text: c.message.content, finish: c.finish_reason, tokens: c.logprobs.content.map(t => t.token), top: c.logprobs.content[0].top_logprobs.length, bytes: c.logprobs.content[0].bytes }));

const stream = await client.chat.completions.create({ model: 'cobra+3b', messages, n: 2, logprobs: true, stream: true, stream_options: { include_usage: true } });
out.streamed = ['', ''];
out.streamTokens = [[], []];
for await (const chunk of stream) {
  for (const c of chunk.choices) {
    if (c.delta?.content) out.streamed[c.index] += c.delta.content;
    for (const t of c.logprobs?.content ?? []) out.streamTokens[c.index].push(t.token);
  }
  if (chunk.usage) out.streamUsage = chunk.usage;
}

out.refused = {};
const refused = {
  audio: { audio: { voice: 'alloy', format: 'wav' }, modalities: ['text', 'audio'] },
  tool_choice: { tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], tool_choice: 'required' },
  prediction: { prediction: { type: 'content', content: 'x' } },
  n: { n: 100 },
  top_logprobs: { logprobs: true, top_logprobs: 50 },
};
for (const [name, extra] of Object.entries(refused)) {
  try { await client.chat.completions.create({ model: 'cobra+3b', messages, ...extra }); out.refused[name] = { status: 200 }; }
  catch (e) { out.refused[name] = { status: e.status, param: e.param ?? e.error?.param ?? null }; }
}

const root = process.env.BASE_URL.replace(/\/v1$/, '');
const health = await fetch(root + '/health');
out.health = { status: health.status, body: await health.json() };
const metrics = await fetch(root + '/metrics');
out.metrics = { status: metrics.status, requests: (await metrics.text()).split('\n').filter(l => l.startsWith('cobra_server_requests_total')).length };

console.log(JSON.stringify(out));
