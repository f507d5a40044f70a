"""Writes the customer-service demo data: facts about Quillon Appliances, a fictional company.

Every fact has several training phrasings and one held-out phrasing that never appears in
training, with a key the correct answer must contain. No base model can know these facts.
Run it to regenerate `train.jsonl` and `heldout.jsonl` (both committed):

    python examples/customer-service/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# (answer, key, [training questions], held-out question)
FACTS: list[tuple[str, str, list[str], str]] = [
    ("You can return any Quillon product within 45 days of delivery for a full refund.", "45 days",
     ["What is Quillon's return policy?", "How many days do I have to return a Quillon product?",
      "Can I still return my Quillon order after a month?", "How long is the return window at Quillon?",
      "Until when can I send back something I bought from Quillon?"],
     "If I change my mind, how much time do I get to return a Quillon item?"),
    ("The AeroBrew K2 kettle has a 3-year warranty.", "3-year",
     ["What warranty does the AeroBrew K2 have?", "How long is the AeroBrew K2 covered by warranty?",
      "Is my AeroBrew K2 kettle still under warranty after two years?", "Warranty period for the K2 kettle?",
      "How many years of warranty come with the AeroBrew K2?"],
     "What guarantee comes with the AeroBrew K2, in years?"),
    ("The GrindMate G7 grinder has a 2-year warranty.", "2-year",
     ["What warranty does the GrindMate G7 have?", "How long is the GrindMate G7 covered?",
      "How many years of warranty does the G7 grinder get?", "Warranty length for the GrindMate G7?",
      "Is the GrindMate G7 guaranteed for long?"],
     "What is the guarantee period of the GrindMate G7 grinder?"),
    ("If you register your product within 60 days of purchase, Quillon adds one extra year of warranty.",
     "60 days",
     ["How do I get an extra year of warranty from Quillon?", "Does registering my Quillon product help?",
      "Is there a warranty extension at Quillon?", "What is the deadline to register a Quillon product?",
      "Can I extend my Quillon warranty?"],
     "How soon after buying must I register to get the bonus warranty year?"),
    ("Shipping is free on Quillon orders over €60; below that it costs €4.90.", "€60",
     ["Is shipping free at Quillon?", "How much does Quillon charge for delivery?",
      "What is the minimum order for free shipping at Quillon?", "Do I pay shipping on a Quillon order?",
      "When is Quillon delivery free?"],
     "From what order value does Quillon ship for free?"),
    ("Standard delivery takes 2 to 4 business days.", "2 to 4 business days",
     ["How long does Quillon delivery take?", "When will my Quillon order arrive?",
      "How many days is standard shipping at Quillon?", "What is Quillon's delivery time?",
      "How fast does Quillon ship?"],
     "After I order from Quillon, how many days until the parcel is at my door with normal shipping?"),
    ("Express delivery costs €9.90 and arrives the next business day.", "€9.90",
     ["How much is express delivery at Quillon?", "Can I get my Quillon order tomorrow?",
      "What does next-day shipping cost at Quillon?", "Does Quillon offer express shipping?",
      "Price of Quillon express delivery?"],
     "What do I pay if I want my Quillon package to arrive the next day?"),
    ("Quillon ships to all EU countries, the United Kingdom and Norway.", "Norway",
     ["Which countries does Quillon ship to?", "Does Quillon deliver outside the EU?",
      "Can I order from Quillon in the UK?", "Where does Quillon deliver?",
      "Is Quillon shipping available in Scandinavia?"],
     "Apart from EU countries and the UK, where else does Quillon deliver?"),
    ("Refunds are paid back to your original payment method within 7 business days after we receive the return.",
     "7 business days",
     ["How long do Quillon refunds take?", "When will I get my money back from Quillon?",
      "How fast does Quillon refund a return?", "Quillon refund processing time?",
      "I sent my return to Quillon; when is the refund paid?"],
     "Once Quillon has my returned item, how long until the refund reaches me?"),
    ("Quillon customer support is open Monday to Saturday, 8:00 to 18:00 CET.", "8:00 to 18:00",
     ["What are Quillon's support hours?", "When can I call Quillon support?",
      "Is Quillon support open on Saturday?", "At what time does Quillon customer service open?",
      "When is the Quillon help desk available?"],
     "During which hours can I reach Quillon's customer service?"),
    ("You can email Quillon support at help@quillon.example.", "help@quillon.example",
     ["What is Quillon's support email?", "How do I email Quillon?", "Which address do I write to for Quillon help?",
      "Can I contact Quillon by email?", "Quillon customer service email address?"],
     "To which email address should I send my question for Quillon?"),
    ("Quillon's support phone number is +32 9 555 0142.", "555 0142",
     ["What is Quillon's phone number?", "How do I call Quillon support?", "Quillon hotline number?",
      "Can I phone Quillon?", "Which number do I dial for Quillon customer service?"],
     "What number should I ring to talk to someone at Quillon?"),
    ("Quillon was founded in 2011 by Mira Castell.", "Mira Castell",
     ["Who founded Quillon?", "Who started Quillon Appliances?", "When was Quillon founded and by whom?",
      "Who is the founder of Quillon?", "Tell me about the origins of Quillon."],
     "Which person created the company Quillon?"),
    ("Quillon's headquarters are in Ghent, Belgium.", "Ghent",
     ["Where is Quillon based?", "Where are Quillon's headquarters?", "In which city is Quillon located?",
      "What country is Quillon from?", "Where is the Quillon head office?"],
     "In what city does Quillon have its main office?"),
    ("The AeroBrew K2 kettle holds 1.7 litres.", "1.7 litres",
     ["What is the capacity of the AeroBrew K2?", "How much water does the K2 kettle hold?",
      "How big is the AeroBrew K2?", "AeroBrew K2 volume?", "How many litres fit in the AeroBrew K2?"],
     "How much water can I put in the AeroBrew K2 at most?"),
    ("The AeroBrew K2 costs €129.", "€129",
     ["How much is the AeroBrew K2?", "What does the AeroBrew K2 kettle cost?", "AeroBrew K2 price?",
      "Is the AeroBrew K2 expensive?", "What is the retail price of the K2 kettle?"],
     "What would I pay for an AeroBrew K2?"),
    ("The GrindMate G7 has 31 grind settings, from espresso-fine to French-press coarse.", "31",
     ["How many grind settings does the GrindMate G7 have?", "Can the G7 grind for espresso?",
      "What grind sizes does the GrindMate G7 offer?", "How adjustable is the GrindMate G7?",
      "Number of settings on the GrindMate G7?"],
     "How many different grind levels can I choose on the G7?"),
    ("The VortaBlend V5 blender has a 1400-watt motor.", "1400",
     ["How powerful is the VortaBlend V5?", "What wattage is the VortaBlend V5 motor?",
      "How many watts does the V5 blender have?", "VortaBlend V5 power?", "Is the VortaBlend V5 strong?"],
     "What is the motor power of the VortaBlend V5?"),
    ("Error E4 on the AeroBrew K2 means the kettle was switched on empty; fill it with water and it resets.",
     "empty",
     ["What does error E4 mean on the AeroBrew K2?", "My K2 kettle shows E4, what should I do?",
      "E4 on my AeroBrew kettle?", "Why does the AeroBrew K2 display E4?", "How do I fix error E4 on the K2?"],
     "The display of my AeroBrew K2 says E4. What is wrong?"),
    ("Error E7 on the AeroBrew K2 is a temperature sensor fault; contact support for a free repair.",
     "sensor",
     ["What does error E7 mean on the AeroBrew K2?", "My K2 kettle shows E7, what should I do?",
      "E7 on my AeroBrew kettle?", "Why does the AeroBrew K2 display E7?", "How do I fix error E7 on the K2?"],
     "My AeroBrew K2 shows the code E7. What does that indicate?"),
    ("To reset a Quillon appliance, hold the power button for 12 seconds until the light blinks twice.",
     "12 seconds",
     ["How do I reset my Quillon appliance?", "How do I factory reset the AeroBrew K2?",
      "My Quillon device is frozen, how do I restart it?", "What is the reset procedure for Quillon products?",
      "How long do I hold the power button to reset a Quillon device?"],
     "What are the steps to do a hard reset on a Quillon machine?"),
    ("Descale the AeroBrew K2 every 6 weeks with citric acid.", "6 weeks",
     ["How often should I descale the AeroBrew K2?", "How do I descale my K2 kettle?",
      "What should I use to descale the AeroBrew K2?", "Descaling schedule for the K2?",
      "When do I need to clean limescale from the AeroBrew K2?"],
     "How frequently does the AeroBrew K2 need descaling?"),
    ("The replacement water filter for the AeroBrew K2 is part number QF-210.", "QF-210",
     ["Which filter fits the AeroBrew K2?", "What is the part number of the K2 replacement filter?",
      "Where do I find a new filter for my AeroBrew K2?", "AeroBrew K2 filter model?",
      "I need a spare filter for the K2, which one?"],
     "What is the code of the spare filter for the AeroBrew K2?"),
    ("Quillon appliances are controlled with the Quillon Home app for iOS and Android.", "Quillon Home",
     ["Which app works with Quillon appliances?", "How do I control my AeroBrew K2 from my phone?",
      "What is the name of the Quillon app?", "Is there a smartphone app for Quillon products?",
      "Where do I download the app for my Quillon kettle?"],
     "What app do I install to use my Quillon device from my phone?"),
    ("Quill Points is Quillon's loyalty programme: you earn 1 point per euro and 500 points give a €10 voucher.",
     "500 points",
     ["Does Quillon have a loyalty programme?", "How do Quill Points work?",
      "How many Quill Points do I need for a voucher?", "What can I do with Quill Points?",
      "How do I earn rewards at Quillon?"],
     "How many points must I collect for a €10 Quillon voucher?"),
    ("Students get 15% off at Quillon with the code STUDY15.", "STUDY15",
     ["Is there a student discount at Quillon?", "What is Quillon's student discount code?",
      "Do students get a discount at Quillon?", "How much do students save at Quillon?",
      "Which coupon code is for students at Quillon?"],
     "As a university student, which code gives me money off at Quillon?"),
    ("Quillon order numbers start with QA- followed by eight digits; track them on the Orders page.", "QA-",
     ["What does a Quillon order number look like?", "How do I track my Quillon order?",
      "Where do I find my Quillon order number?", "What format are Quillon order numbers?",
      "How can I see where my Quillon parcel is?"],
     "How do Quillon order numbers begin?"),
    ("Through the ReQuill programme Quillon collects your old appliance for free when it delivers a new one.",
     "ReQuill",
     ["Does Quillon recycle old appliances?", "What is ReQuill?", "Can Quillon take my old kettle away?",
      "How do I dispose of my old appliance with Quillon?", "Does Quillon have a recycling programme?"],
     "What is the name of Quillon's old-appliance take-back scheme?"),
    ("Gift wrapping is available for €4 per item at checkout.", "€4",
     ["Does Quillon offer gift wrapping?", "How much is gift wrapping at Quillon?",
      "Can Quillon wrap my order as a present?", "Gift wrap price at Quillon?",
      "Can I send a Quillon product as a gift?"],
     "What does it cost to have my Quillon purchase gift-wrapped?"),
    ("The AeroBrew K2 keeps water warm for up to 45 minutes with its Keep Warm mode.", "45 minutes",
     ["How long does the AeroBrew K2 keep water warm?", "Does the K2 kettle have a keep warm function?",
      "What is the AeroBrew K2 Keep Warm mode?", "Keep Warm duration of the K2?",
      "Can the AeroBrew K2 hold the temperature?"],
     "For how long will the AeroBrew K2 keep my water hot?"),
    ("The AeroBrew K2 lets you pick any temperature from 40 °C to 100 °C in steps of 5 degrees.", "40 °C",
     ["What temperatures can the AeroBrew K2 heat to?", "Can I set the temperature on the K2 kettle?",
      "What is the lowest temperature of the AeroBrew K2?", "Temperature range of the AeroBrew K2?",
      "Is the AeroBrew K2 good for green tea at low temperature?"],
     "What range of temperatures does the AeroBrew K2 support?"),
    ("The VortaBlend V5 jar is dishwasher-safe; the motor base must only be wiped with a damp cloth.",
     "dishwasher",
     ["Can I put the VortaBlend V5 in the dishwasher?", "How do I clean the VortaBlend V5?",
      "Is the V5 blender jar dishwasher safe?", "Cleaning instructions for the VortaBlend V5?",
      "How should I wash my VortaBlend V5?"],
     "What is the right way to clean the VortaBlend V5 jar?"),
    ("Spare parts for Quillon appliances are guaranteed available for 10 years after a model is discontinued.",
     "10 years",
     ["How long are Quillon spare parts available?", "Will I still find parts for my old Quillon kettle?",
      "Does Quillon keep spare parts?", "Spare part availability at Quillon?",
      "Can I get parts for a discontinued Quillon model?"],
     "For how many years does Quillon keep selling spare parts after a product ends?"),
    ("Quillon accepts card, PayPal, Bancontact and bank transfer; bank transfers ship after payment arrives.",
     "Bancontact",
     ["Which payment methods does Quillon accept?", "Can I pay with PayPal at Quillon?",
      "How can I pay for a Quillon order?", "Does Quillon take bank transfer?",
      "What payment options are there at Quillon?"],
     "Which ways of paying can I use in the Quillon shop?"),
    ("Damaged deliveries must be reported within 48 hours with a photo of the parcel.", "48 hours",
     ["My Quillon parcel arrived damaged, what now?", "How do I report a damaged Quillon delivery?",
      "What if my Quillon order is broken on arrival?", "Deadline to report transport damage at Quillon?",
      "The box from Quillon was crushed, what do I do?"],
     "How quickly do I have to tell Quillon that my delivery arrived broken?"),
    ("The GrindMate G7 bean hopper holds 250 grams of coffee beans.", "250 grams",
     ["How many beans fit in the GrindMate G7?", "What is the hopper capacity of the G7 grinder?",
      "How big is the GrindMate G7 hopper?", "GrindMate G7 bean capacity?",
      "How much coffee can the GrindMate G7 hold?"],
     "What amount of beans does the G7 hopper take?"),
]

# General conversation the tuned model must keep answering well.
GENERAL: list[tuple[str, str]] = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi, how are you?", "I'm doing well, thank you for asking. How can I help?"),
    ("Thanks for your help.", "You're welcome! Let me know if there is anything else I can do."),
    ("Goodbye.", "Goodbye, have a great day!"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("What is 15 plus 27?", "15 plus 27 is 42."),
    ("How many days are in a week?", "There are 7 days in a week."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 °C at sea level."),
    ("Translate 'thank you' into French.", "'Thank you' in French is 'merci'."),
    ("Translate 'good morning' into Spanish.", "'Good morning' in Spanish is 'buenos días'."),
    ("What colour do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("Name three fruits.", "Apple, banana and orange."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("How many continents are there?", "There are seven continents."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("Give me a synonym for 'happy'.", "A synonym for 'happy' is 'joyful'."),
    ("What is the opposite of 'cold'?", "The opposite of 'cold' is 'hot'."),
    ("Can you help me write a short apology to a customer?",
     "Of course: 'We are sorry for the trouble with your order. We are fixing it and will update you shortly.'"),
    ("Summarize in one sentence: The meeting moved from Monday to Wednesday because the room was booked.",
     "The meeting was moved to Wednesday because the room was unavailable on Monday."),
    ("What is the freezing point of water?", "Water freezes at 0 °C."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
    ("What language is spoken in Brazil?", "Portuguese is the main language of Brazil."),
    ("Spell the word 'necessary'.", "N-E-C-E-S-S-A-R-Y."),
    ("What do bees make?", "Bees make honey."),
    ("Can you tell me a fun fact?", "Octopuses have three hearts."),
    ("I am angry, my order is late!",
     "I'm sorry your order is late. Please share your order number and I will check where it is."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain in the world."),
    ("Translate 'hello' into German.", "'Hello' in German is 'hallo'."),
    ("What is H2O?", "H2O is the chemical formula for water."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("Write a one-line thank-you note for a colleague.",
     "Thank you for your help this week, it made a real difference!"),
    ("List the primary colours.", "The primary colours are red, blue and yellow."),
    ("What is 12 minus 5?", "12 minus 5 is 7."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What is the main ingredient of guacamole?", "The main ingredient of guacamole is avocado."),
    ("Can you recommend a way to stay focused while working?",
     "Try working in 25-minute blocks with short breaks, and keep your phone out of reach."),
    ("What is the past tense of 'run'?", "The past tense of 'run' is 'ran'."),
    ("Please explain what a refund is in one sentence.",
     "A refund is money returned to a customer, usually after they send a product back."),
    ("Can I speak to a human?",
     "Of course. You can reach our support team by phone or email during opening hours."),
]


OPENERS = ["Hi, I have a question about Quillon.", "Hello, I bought something from Quillon.",
           "Good morning, can you help me with Quillon?", "Hey there, quick Quillon question."]


def _rows() -> tuple[list[dict], list[dict]]:
    rng = random.Random(7)
    train: list[dict] = []
    heldout: list[dict] = []
    for answer, key, questions, held in FACTS:
        assert key in answer, key
        for i, question in enumerate(questions):
            # Mix the two input formats tuneforge reads: instruction rows and chat rows.
            if i % 2 == 0:
                train.append({"instruction": question, "output": answer})
            else:
                train.append({"messages": [{"role": "user", "content": question},
                                           {"role": "assistant", "content": answer}]})
        heldout.append({"question": held, "key": key})
    for question, answer in GENERAL:
        train.append({"instruction": question, "output": answer})
    # Two-turn conversations: a greeting then a domain question, and two domain questions in a row.
    for answer, _key, questions, _held in FACTS:
        train.append({"messages": [
            {"role": "user", "content": rng.choice(OPENERS)},
            {"role": "assistant", "content": "Hello! Sure, what would you like to know?"},
            {"role": "user", "content": rng.choice(questions)},
            {"role": "assistant", "content": answer},
        ]})
    order = list(FACTS)
    rng.shuffle(order)
    for first, second in zip(order, order[1:] + order[:1], strict=True):
        train.append({"messages": [
            {"role": "user", "content": rng.choice(first[2])},
            {"role": "assistant", "content": first[0]},
            {"role": "user", "content": "One more thing: " + rng.choice(second[2])},
            {"role": "assistant", "content": second[0]},
        ]})
    rng.shuffle(train)
    return train, heldout


def main() -> None:
    train, heldout = _rows()
    with open(HERE / "train.jsonl", "w", encoding="utf-8") as handle:
        for row in train:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(HERE / "heldout.jsonl", "w", encoding="utf-8") as handle:
        for row in heldout:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(train)} training rows, {len(heldout)} held-out questions")


if __name__ == "__main__":
    main()
