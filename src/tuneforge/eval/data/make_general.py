"""Writes general.jsonl: the forgetting-check set shipped with tuneforge (written for this project).

Short questions with keys across facts, arithmetic, instructions, language, and Chinese. A tuned
model should answer these about as well as its base; the drop is the forgetting.
Run: python src/tuneforge/eval/data/make_general.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FACTS = [
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"), ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Russia?", "Moscow"), ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of China?", "Beijing"), ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Australia?", "Canberra"), ("What is the capital of Greece?", "Athens"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"), ("What is the closest star to Earth?", "Sun"),
    ("What gas do plants absorb for photosynthesis?", "carbon dioxide"),
    ("What is the chemical symbol for gold?", "Au"), ("What is the chemical symbol for water?", "H2O"),
    ("What is the freezing point of water in Celsius?", "0"), ("How many legs does a spider have?", ["8", "eight"]),
    ("How many continents are there?", ["7", "seven"]), ("Which ocean is the largest?", "Pacific"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"), ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
    ("Who developed the theory of relativity?", "Einstein"), ("What is the tallest mountain on Earth?", "Everest"),
    ("What is the longest river in Africa?", "Nile"), ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What is the currency of Japan?", "yen"), ("What is the currency of the United States?", "dollar"),
    ("How many days are in a leap year?", "366"), ("How many minutes are in an hour?", ["60", "sixty"]),
    ("What organ pumps blood through the body?", "heart"), ("What do bees make?", "honey"),
    ("What is the hardest natural substance?", "diamond"), ("What is the largest mammal?", "whale"),
    ("In which country are the pyramids of Giza?", "Egypt"), ("What color is the sky on a clear day?", "blue"),
    ("What is frozen water called?", "ice"), ("How many sides does a hexagon have?", ["6", "six"]),
]
INSTRUCTIONS = [
    ("Reply with only the word YES.", "yes"), ("Repeat this word exactly: banana", "banana"),
    ("Write the word 'hello' in capital letters.", "HELLO"), ("Spell the word 'cat' backwards.", "tac"),
    ("What is the opposite of 'hot'?", "cold"), ("What is the opposite of 'up'?", "down"),
    ("What is the plural of 'mouse'?", "mice"), ("What is the plural of 'child'?", "children"),
    ("What is the past tense of 'go'?", "went"), ("What is the past tense of 'eat'?", "ate"),
    ("Complete the sequence: Monday, Tuesday, ...", "Wednesday"), ("What month comes after March?", "April"),
    ("What comes next: 2, 4, 6, 8, ...?", "10"), ("Translate 'thank you' into French.", "merci"),
    ("Translate 'hello' into Spanish.", "hola"), ("Translate 'cat' into German.", "Katze"),
    ("Name the color you get by mixing red and white.", "pink"), ("What is a baby dog called?", "puppy"),
    ("What is a baby cat called?", "kitten"), ("Which is bigger, an elephant or a mouse?", "elephant"),
    ("Give a synonym for 'big'.", ["large", "huge", "enormous"]), ("What is the opposite of 'happy'?", "sad"),
    ("How many letters are in the word 'apple'?", ["5", "five"]), ("What is the first month of the year?", "January"),
    ("What is the last month of the year?", "December"),
]
CHINESE = [
    ("中国的首都是哪里？", ["北京", "Beijing"]), ("日本的首都是哪里？", ["东京", "Tokyo"]),
    ("一年有几个月？", ["12", "十二"]), ("一周有几天？", ["7", "七"]), ("一天有多少小时？", ["24", "二十四"]),
    ("水的化学式是什么？", "H2O"), ("太阳从哪个方向升起？", "东"), ("地球上最大的海洋是什么？", "太平洋"),
    ("中国最长的河流是哪条？", "长江"), ("熊猫主要吃什么？", "竹"), ("《红楼梦》的作者是谁？", "曹雪芹"),
    ("李白是哪个朝代的诗人？", "唐"), ("春节是农历几月几日？", ["正月初一", "一月一日", "1月1日"]),
    ("一个三角形有几条边？", ["3", "三"]), ("冰是什么状态的水？", "固"), ("天空通常是什么颜色？", "蓝"),
    ("请把“谢谢”翻译成英文。", ["thank you", "thanks"]), ("请把“猫”翻译成英文。", "cat"),
    ("“大”的反义词是什么？", "小"), ("“高兴”的反义词是什么？", ["难过", "伤心", "悲伤"]),
    ("中国的国旗是什么颜色的？", "红"), ("世界上最高的山峰是哪座？", "珠穆朗玛"), ("月球绕着什么转？", "地球"),
    ("人体最大的器官是什么？", "皮肤"), ("十加五等于多少？", ["15", "十五"]), ("二乘以三等于多少？", ["6", "六"]),
    ("一百减去一等于多少？", ["99", "九十九"]), ("蜜蜂会酿造什么？", "蜜"), ("鱼用什么呼吸？", "鳃"),
    ("植物进行光合作用需要什么光？", "阳光"), ("中国的货币叫什么？", ["人民币", "元"]),
    ("上海位于哪个国家？", "中国"), ("长城位于哪个国家？", "中国"), ("北京奥运会是在哪一年举办的？", "2008"),
    ("一小时有多少分钟？", ["60", "六十"]), ("请用中文回答：英国的首都是哪里？", "伦敦"),
    ("请用中文回答：法国的首都是哪里？", "巴黎"), ("彩虹有几种颜色？", ["7", "七"]),
    ("水在多少摄氏度结冰？", ["0", "零"]), ("一年有多少天（非闰年）？", "365"),
]


def arithmetic(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        op = ["+", "-", "*"][i % 3]
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        rows.append((f"What is {a} {word} {b}?", [str(value)]))
    return rows


def main() -> None:
    rng = random.Random(2026)
    sections = [("facts", FACTS), ("instructions", INSTRUCTIONS), ("chinese", CHINESE),
                ("arithmetic", arithmetic(rng, 45))]
    out = Path(__file__).with_name("general.jsonl")
    count = 0
    with open(out, "w", encoding="utf-8") as handle:
        for category, rows in sections:
            for question, key in rows:
                handle.write(json.dumps({"question": question, "key": key, "category": category},
                                        ensure_ascii=False) + "\n")
                count += 1
    print(f"{count} questions → {out}")


if __name__ == "__main__":
    main()
