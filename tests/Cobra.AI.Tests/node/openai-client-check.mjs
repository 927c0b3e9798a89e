// Talks to a running `cobra serve`-style endpoint with the official openai npm client and prints what it saw.
// Env: BASE_URL (…/v1), API_KEY, IMAGE (a PNG path).
import OpenAI from 'openai';
import fs from 'node:fs';

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 });
const image = 'data:image/png;base64,' + fs.readFileSync(process.env.IMAGE).toString('base64');
const messages = [{ role: 'user', content: [{ type: 'text', text: 'What is going on in this image?' }, { type: 'image_url', image_url: { url: image } }] }];
const out = {};

const reply = await client.chat.completions.create({ model: 'cobra+3b', messages, max_tokens: 16 });
out.text = reply.choices[0].message.content;
out.finish = reply.choices[0].finish_reason;
out.usage = reply.usage;

const stream = await client.chat.completions.create({ model: 'cobra+3b', messages, max_tokens: 16, stream: true, stream_options: { include_usage: true } });
out.streamText = '';
for await (const chunk of stream) {
  if (chunk.choices?.[0]?.delta?.content) out.streamText += chunk.choices[0].delta.content;
  if (chunk.usage) out.streamUsage = chunk.usage;
}

out.stopped = (await client.chat.completions.create({ model: 'cobra+3b', messages, max_tokens: 16, stop: ['sis&'] })).choices[0].message.content;
const seeded = () => client.chat.completions.create({ model: 'cobra+3b', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, temperature: 1.2, seed: 7 });
out.seeded = [(await seeded()).choices[0].message.content, (await seeded()).choices[0].message.content];
out.models = (await client.models.list()).data.map(m => m.id);

out.errors = {};
const failing = {
  model: () => client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
  malformed: () => client.chat.completions.create({ model: 'cobra+3b', messages: [] }),
  image: () => client.chat.completions.create({ model: 'cobra+3b', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] }] }),
  key: () => new OpenAI({ baseURL: process.env.BASE_URL, apiKey: 'wrong', maxRetries: 0 }).chat.completions.create({ model: 'cobra+3b', messages: [{ role: 'user', content: 'x' }] }),
};
for (const [name, call] of Object.entries(failing)) {
  try { await call(); out.errors[name] = 200; } catch (e) { out.errors[name] = e.status; }
}

console.log(JSON.stringify(out));
