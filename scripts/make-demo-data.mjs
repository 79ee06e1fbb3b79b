#!/usr/bin/env node
// Writes data/demo.jsonl: a few hundred short conversations (Chinese and English) in Firefly's format,
// generated from the small fact tables below (written for this project, no third-party data).
// Answers are short on purpose so a tiny model can overfit some of them. Deterministic: the same
// script always writes the same file.  Run: node scripts/make-demo-data.mjs [out.jsonl]
import { writeFileSync } from 'node:fs';

const OUT = process.argv[2] ?? 'data/demo.jsonl';
const COUNT = 360;

// mulberry32: a tiny seeded PRNG, so the file is reproducible.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20241123);
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

// [English country, Chinese country, English capital, Chinese capital]
const CAPITALS = [
  ['China', '中国', 'Beijing', '北京'], ['Japan', '日本', 'Tokyo', '东京'], ['France', '法国', 'Paris', '巴黎'],
  ['Germany', '德国', 'Berlin', '柏林'], ['Italy', '意大利', 'Rome', '罗马'], ['Spain', '西班牙', 'Madrid', '马德里'],
  ['the United Kingdom', '英国', 'London', '伦敦'], ['Russia', '俄罗斯', 'Moscow', '莫斯科'],
  ['Canada', '加拿大', 'Ottawa', '渥太华'], ['Australia', '澳大利亚', 'Canberra', '堪培拉'],
  ['Brazil', '巴西', 'Brasília', '巴西利亚'], ['Egypt', '埃及', 'Cairo', '开罗'], ['India', '印度', 'New Delhi', '新德里'],
  ['South Korea', '韩国', 'Seoul', '首尔'], ['Thailand', '泰国', 'Bangkok', '曼谷'], ['Kenya', '肯尼亚', 'Nairobi', '内罗毕'],
  ['Norway', '挪威', 'Oslo', '奥斯陆'], ['Greece', '希腊', 'Athens', '雅典'], ['Portugal', '葡萄牙', 'Lisbon', '里斯本'],
  ['Vietnam', '越南', 'Hanoi', '河内'], ['Argentina', '阿根廷', 'Buenos Aires', '布宜诺斯艾利斯'],
  ['Turkey', '土耳其', 'Ankara', '安卡拉'],
];

// [English word, Chinese word]
const WORDS = [
  ['apple', '苹果'], ['water', '水'], ['book', '书'], ['cat', '猫'], ['dog', '狗'], ['sun', '太阳'], ['moon', '月亮'],
  ['friend', '朋友'], ['school', '学校'], ['tea', '茶'], ['rain', '雨'], ['mountain', '山'], ['river', '河'],
  ['flower', '花'], ['computer', '电脑'], ['teacher', '老师'], ['bread', '面包'], ['rice', '米饭'], ['bird', '鸟'],
  ['tree', '树'], ['city', '城市'], ['music', '音乐'], ['door', '门'], ['window', '窗户'], ['milk', '牛奶'],
];

// [English colour, Chinese colour]
const COLOURS = { red: '红色', yellow: '黄色', blue: '蓝色', green: '绿色', orange: '橙色', purple: '紫色', white: '白色', black: '黑色', grey: '灰色', pink: '粉色' };
// things and their usual colour
const THINGS = [
  ['the sky on a clear day', '晴天的天空', 'blue'], ['grass', '草', 'green'], ['snow', '雪', 'white'],
  ['a ripe banana', '熟香蕉', 'yellow'], ['coal', '煤', 'black'], ['a ripe tomato', '熟番茄', 'red'],
  ['an orange', '橙子', 'orange'], ['a lemon', '柠檬', 'yellow'], ['milk', '牛奶', 'white'], ['a crow', '乌鸦', 'black'],
];
const MIXES = [['red', 'yellow', 'orange'], ['blue', 'yellow', 'green'], ['red', 'blue', 'purple'], ['red', 'white', 'pink'], ['black', 'white', 'grey']];

// [English term, English definition, Chinese term, Chinese definition]
const DEFINITIONS = [
  ['a noun', 'A noun is a word that names a person, place or thing.', '名词', '名词是表示人、地方或事物名称的词。'],
  ['a verb', 'A verb is a word that describes an action or a state.', '动词', '动词是表示动作或状态的词。'],
  ['a prime number', 'A prime number is a whole number above 1 whose only divisors are 1 and itself.', '质数', '质数是大于1、只能被1和自身整除的整数。'],
  ['an even number', 'An even number is a whole number that 2 divides exactly.', '偶数', '偶数是能被2整除的整数。'],
  ['a triangle', 'A triangle is a shape with three sides and three angles.', '三角形', '三角形是有三条边和三个角的图形。'],
  ['a square', 'A square is a shape with four equal sides and four right angles.', '正方形', '正方形是四条边相等、四个角都是直角的图形。'],
  ['a circle', 'A circle is the set of points at the same distance from a centre.', '圆', '圆是到中心距离相等的所有点组成的图形。'],
  ['a mammal', 'A mammal is a warm-blooded animal that feeds its young with milk.', '哺乳动物', '哺乳动物是用乳汁喂养幼崽的温血动物。'],
  ['a planet', 'A planet is a large body that orbits a star.', '行星', '行星是围绕恒星运行的大型天体。'],
  ['a year', 'A year is the time the Earth takes to go once around the Sun.', '一年', '一年是地球绕太阳公转一周的时间。'],
  ['a week', 'A week is a period of seven days.', '一周', '一周是七天。'],
  ['a poem', 'A poem is a piece of writing that uses rhythm and imagery.', '诗', '诗是讲究节奏和意象的文字作品。'],
];

// [unit from, unit to, factor, English names, Chinese names]
const UNITS = [
  ['km', 'm', 1000, ['kilometres', 'metres'], ['公里', '米']],
  ['m', 'cm', 100, ['metres', 'centimetres'], ['米', '厘米']],
  ['kg', 'g', 1000, ['kilograms', 'grams'], ['千克', '克']],
  ['h', 'min', 60, ['hours', 'minutes'], ['小时', '分钟']],
  ['min', 's', 60, ['minutes', 'seconds'], ['分钟', '秒']],
  ['L', 'mL', 1000, ['litres', 'millilitres'], ['升', '毫升']],
  ['day', 'h', 24, ['days', 'hours'], ['天', '小时']],
];

const GREETINGS_ZH = [
  ['你好', '你好！有什么可以帮你的吗？'],
  ['早上好', '早上好！祝你今天顺利。'],
  ['晚上好', '晚上好！有什么我可以帮忙的吗？'],
  ['你是谁？', '我是一个小小的助手，可以回答简单的问题。'],
];
const GREETINGS_EN = [
  ['Hello', 'Hello! How can I help you today?'],
  ['Hi there', 'Hi! What would you like to know?'],
  ['Good morning', 'Good morning! I hope your day goes well.'],
  ['Who are you?', 'I am a small assistant that answers simple questions.'],
];
const THANKS_ZH = [['谢谢', '不客气！'], ['谢谢你的帮助', '不客气，很高兴能帮到你。'], ['再见', '再见，祝你愉快！']];
const THANKS_EN = [['Thank you', 'You are welcome!'], ['Thanks for the help', 'Glad I could help.'], ['Goodbye', 'Goodbye, have a nice day!']];

// Each generator returns one [question, answer] pair; `lang` is 'zh' or 'en'.
const QA = {
  arithmetic(lang) {
    const op = pick(['+', '-', '*']);
    let a = int(2, 50);
    let b = int(2, op === '*' ? 12 : 50);
    if (op === '-' && b > a) [a, b] = [b, a];
    const r = op === '+' ? a + b : op === '-' ? a - b : a * b;
    if (lang === 'zh') {
      const w = { '+': '加', '-': '减', '*': '乘以' }[op];
      return pick([[`${a}${w}${b}等于多少？`, `${a}${w}${b}等于${r}。`], [`计算 ${a} ${op === '*' ? '×' : op} ${b}`, `结果是${r}。`]]);
    }
    const w = { '+': 'plus', '-': 'minus', '*': 'times' }[op];
    return pick([[`What is ${a} ${w} ${b}?`, `${a} ${w} ${b} is ${r}.`], [`Compute ${a} ${op === '*' ? '×' : op} ${b}.`, `The answer is ${r}.`]]);
  },
  unit_conversion(lang) {
    const [, , f, en, zh] = pick(UNITS);
    const x = int(1, 12);
    if (lang === 'zh') return [`${x}${zh[0]}等于多少${zh[1]}？`, `${x}${zh[0]}等于${x * f}${zh[1]}。`];
    return [`How many ${en[1]} are in ${x} ${en[0]}?`, `${x} ${en[0]} is ${x * f} ${en[1]}.`];
  },
  capital(lang) {
    const [c, cz, cap, capz] = pick(CAPITALS);
    if (lang === 'zh') return pick([[`${cz}的首都是哪里？`, `${cz}的首都是${capz}。`], [`${capz}是哪个国家的首都？`, `${capz}是${cz}的首都。`]]);
    return pick([[`What is the capital of ${c}?`, `The capital of ${c} is ${cap}.`], [`${cap} is the capital of which country?`, `${cap} is the capital of ${c}.`]]);
  },
  colour(lang) {
    if (rand() < 0.5) {
      const [t, tz, col] = pick(THINGS);
      if (lang === 'zh') return [`${tz}通常是什么颜色？`, `${tz}通常是${COLOURS[col]}。`];
      return [`What colour is ${t} usually?`, `${t[0].toUpperCase()}${t.slice(1)} is usually ${col}.`];
    }
    const [a, b, r] = pick(MIXES);
    if (lang === 'zh') return [`${COLOURS[a]}和${COLOURS[b]}混在一起是什么颜色？`, `${COLOURS[a]}和${COLOURS[b]}混合得到${COLOURS[r]}。`];
    return [`What colour do you get by mixing ${a} and ${b}?`, `Mixing ${a} and ${b} gives ${r}.`];
  },
  definition(lang) {
    const [t, d, tz, dz] = pick(DEFINITIONS);
    if (lang === 'zh') return pick([[`什么是${tz}？`, dz], [`请解释一下${tz}。`, dz]]);
    return pick([[`What is ${t}?`, d], [`Define ${t.replace(/^an? /, '')}.`, d]]);
  },
  translation(lang) {
    const [en, zh] = pick(WORDS);
    if (lang === 'zh') return pick([[`把“${en}”翻译成中文。`, `“${en}”的中文是“${zh}”。`], [`“${zh}”用英语怎么说？`, `“${zh}”的英文是“${en}”。`]]);
    return pick([[`Translate "${zh}" into English.`, `"${zh}" means "${en}".`], [`How do you say "${en}" in Chinese?`, `"${en}" in Chinese is "${zh}".`]]);
  },
};
const CATEGORIES = Object.keys(QA);

// "你好"/"Hello" come up most often: `npm run demo` chats with the trained model by saying 你好.
const greet = (list) => (rand() < 0.5 ? list[0] : pick(list));

const lines = [];
const seen = new Set();
for (let id = 1; id <= COUNT; ) {
  const lang = rand() < 0.5 ? 'zh' : 'en';
  const turns = int(1, 3);
  const kind = rand();
  let category;
  const conversation = [];
  // a question is not asked twice in one conversation
  const push = (make) => {
    for (let tries = 0; tries < 20; tries++) {
      const [human, assistant] = make();
      if (conversation.some((t) => t.human === human)) continue;
      conversation.push({ human, assistant });
      return;
    }
  };
  if (kind < 0.2) {
    // greeting, then maybe a question, then maybe thanks
    category = 'greeting';
    push(() => greet(lang === 'zh' ? GREETINGS_ZH : GREETINGS_EN));
    const topic = pick(CATEGORIES);
    if (turns >= 2) push(() => QA[topic](lang));
    if (turns >= 3) push(() => pick(lang === 'zh' ? THANKS_ZH : THANKS_EN));
  } else {
    category = pick(CATEGORIES);
    for (let t = 0; t < turns; t++) push(() => QA[category](lang));
  }
  const key = JSON.stringify(conversation);
  if (seen.has(key)) continue; // every conversation distinct
  seen.add(key);
  lines.push(JSON.stringify({ conversation_id: id, category, conversation }));
  id++;
}
writeFileSync(OUT, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} conversations to ${OUT}`);
