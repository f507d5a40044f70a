"""Writes the translation example's data: English → French customer-service text of Lumeo (a fictional
smart-lighting company), with a glossary that a translation must respect.

- product names stay untranslated (Lumeo Hub, GlowStrip S2, NightOwl Sensor, DimDial, Lumeo Care+, the Lumeo
  Connect app);
- fixed terminology: order → commande, return label → étiquette de retour, customer account → espace client,
  firmware update → mise à jour du micrologiciel, support ticket → ticket d'assistance, … (GLOSSARY).

Files (all committed; run `python examples/translation/make_data.py` to regenerate them):

- `train.jsonl`: parallel pairs as chat rows, the source behind the language tag `<2fr>` (the target-language
  marker, as in multilingual NMT) — orders, delivery, returns, refunds, warranty and account topics, each
  sentence template filled with several products, the glossary's terms, and two-sentence messages;
- `monolingual.fr.txt`: French-only text (one sentence a line), as a company has in its French help centre,
  which also covers the app, firmware and subscription topics the parallel pairs hardly touch. It is the input
  of back-translation (`data.augment.back_translation`); its English is never used for training — only
  `measure_bt.py` reads it (MONOLINGUAL below) to score the synthetic sources;
- `heldout.jsonl`: {question, reference} rows — English sentences written apart from both, never in training
  (the pipeline's contamination check verifies it), over all topics; eval scores them with corpus chrF.

- `reverse/train.jsonl`, `reverse/heldout.jsonl`: the same pairs the other way, French behind `<2en>` →
  English, for the reverse model (`reverse.yaml`) that back-translates `monolingual.fr.txt`.

`--untagged` writes the same rows without the tag (into `untagged/`), for the tagged-vs-untagged comparison.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
TAG = "<2fr>"  # "translate into French"
REVERSE_TAG = "<2en>"  # "translate into English": the reverse model that back-translates

PRODUCTS = ["Lumeo Hub", "GlowStrip S2", "NightOwl Sensor", "DimDial", "Lumeo Bulb E27", "Lumeo Spot Mini"]

GLOSSARY: list[tuple[str, str]] = [
    ("order", "commande"), ("delivery", "livraison"), ("return label", "étiquette de retour"),
    ("refund", "remboursement"), ("warranty", "garantie"), ("customer account", "espace client"),
    ("invoice", "facture"), ("firmware update", "mise à jour du micrologiciel"),
    ("support ticket", "ticket d'assistance"), ("tracking number", "numéro de suivi"),
    ("business days", "jours ouvrés"), ("replacement", "remplacement"), ("serial number", "numéro de série"),
    ("subscription", "abonnement"), ("password", "mot de passe"), ("parcel", "colis"),
    ("customer service", "service client"), ("warehouse", "entrepôt"), ("voucher", "bon d'achat"),
    ("pairing", "appairage"),
]

# (English, French) with {p}: a product name, kept as is. Masculine in French ("le GlowStrip S2").
TEMPLATES: list[tuple[str, str]] = [
    ("Your {p} has been shipped.", "Votre {p} a été expédié."),
    ("Your {p} will arrive within three business days.", "Votre {p} arrivera sous trois jours ouvrés."),
    ("The {p} is out of stock at the moment.", "Le {p} est en rupture de stock pour le moment."),
    ("We will send you a replacement {p} free of charge.", "Nous vous enverrons un {p} de remplacement gratuitement."),
    ("The {p} has a two-year warranty.", "Le {p} bénéficie d'une garantie de deux ans."),
    ("Please print the return label and stick it on the parcel with your {p}.",
     "Veuillez imprimer l'étiquette de retour et la coller sur le colis contenant votre {p}."),
    ("You can return your {p} within thirty days.", "Vous pouvez retourner votre {p} sous trente jours."),
    ("Your refund for the {p} has been approved.", "Votre remboursement pour le {p} a été approuvé."),
    ("The serial number of your {p} is printed on the back.",
     "Le numéro de série de votre {p} est imprimé au dos."),
    ("Is your {p} still under warranty?", "Votre {p} est-il encore sous garantie ?"),
    ("We have received your {p} at our warehouse.", "Nous avons reçu votre {p} dans notre entrepôt."),
    ("Your {p} is in stock again.", "Votre {p} est de nouveau en stock."),
    ("The price of the {p} includes delivery.", "Le prix du {p} comprend la livraison."),
    ("Restart your {p} and try again.", "Redémarrez votre {p} et réessayez."),
    ("Your order for the {p} has been cancelled.", "Votre commande du {p} a été annulée."),
    ("Thank you for buying the {p}.", "Merci d'avoir acheté le {p}."),
    ("Keep the invoice for your {p}.", "Conservez la facture de votre {p}."),
    ("Unfortunately, your {p} was damaged during delivery.",
     "Malheureusement, votre {p} a été endommagé pendant la livraison."),
]

# Sentences without a product slot.
SENTENCES: list[tuple[str, str]] = [
    ("Thank you for contacting Lumeo customer service.", "Merci d'avoir contacté le service client Lumeo."),
    ("Your order has been confirmed.", "Votre commande a été confirmée."),
    ("Your parcel is on its way.", "Votre colis est en route."),
    ("Here is your tracking number.", "Voici votre numéro de suivi."),
    ("Delivery is free for orders over fifty euros.",
     "La livraison est gratuite pour les commandes de plus de cinquante euros."),
    ("We are sorry for the delay.", "Nous sommes désolés pour le retard."),
    ("Your refund will be paid within five business days.",
     "Votre remboursement sera versé sous cinq jours ouvrés."),
    ("You can download your invoice from your customer account.",
     "Vous pouvez télécharger votre facture depuis votre espace client."),
    ("Please log in to your customer account.", "Veuillez vous connecter à votre espace client."),
    ("You can change your password in your customer account.",
     "Vous pouvez modifier votre mot de passe dans votre espace client."),
    ("We have opened a support ticket for you.", "Nous avons ouvert un ticket d'assistance pour vous."),
    ("Your support ticket has been closed.", "Votre ticket d'assistance a été fermé."),
    ("Please send us a photo of the damaged parcel.", "Veuillez nous envoyer une photo du colis endommagé."),
    ("We will reply within two business days.", "Nous vous répondrons sous deux jours ouvrés."),
    ("Our customer service is open from Monday to Friday.",
     "Notre service client est ouvert du lundi au vendredi."),
    ("Your return has been registered.", "Votre retour a été enregistré."),
    ("The return label is attached to this email.", "L'étiquette de retour est jointe à cet e-mail."),
    ("We have sent you a voucher of ten euros.", "Nous vous avons envoyé un bon d'achat de dix euros."),
    ("Your voucher is valid for one year.", "Votre bon d'achat est valable un an."),
    ("The warranty does not cover water damage.", "La garantie ne couvre pas les dégâts des eaux."),
    ("A firmware update is available.", "Une mise à jour du micrologiciel est disponible."),
    ("Your subscription has been renewed.", "Votre abonnement a été renouvelé."),
    ("Open the Lumeo Connect app.", "Ouvrez l'application Lumeo Connect."),
    ("Is there anything else we can do for you?", "Pouvons-nous faire autre chose pour vous ?"),
    ("Have a nice day.", "Bonne journée."),
    ("Your order will be shipped tomorrow.", "Votre commande sera expédiée demain."),
    ("The parcel was returned to our warehouse.", "Le colis a été renvoyé à notre entrepôt."),
    ("Please check your spam folder.", "Veuillez vérifier votre dossier de courrier indésirable."),
]

# French-only help-centre text for back-translation. The English is kept here for measure_bt.py alone
# (how good the synthetic sources are); it is never written into a training file.
MONOLINGUAL: list[tuple[str, str]] = [
    ("Open the Lumeo Connect app and tap Add a device.",
     "Ouvrez l'application Lumeo Connect et touchez Ajouter un appareil."),
    ("The pairing takes less than a minute.", "L'appairage prend moins d'une minute."),
    ("Keep your phone close to the Lumeo Hub during pairing.",
     "Gardez votre téléphone près du Lumeo Hub pendant l'appairage."),
    ("If the pairing fails, restart the Lumeo Hub.", "Si l'appairage échoue, redémarrez le Lumeo Hub."),
    ("The firmware update starts automatically at night.",
     "La mise à jour du micrologiciel démarre automatiquement la nuit."),
    ("Do not unplug the device during the firmware update.",
     "Ne débranchez pas l'appareil pendant la mise à jour du micrologiciel."),
    ("The firmware update takes about ten minutes.", "La mise à jour du micrologiciel dure environ dix minutes."),
    ("You can check the firmware version in the Lumeo Connect app.",
     "Vous pouvez vérifier la version du micrologiciel dans l'application Lumeo Connect."),
    ("Lumeo Care+ extends the warranty to five years.", "Lumeo Care+ prolonge la garantie à cinq ans."),
    ("Your Lumeo Care+ subscription costs four euros per month.",
     "Votre abonnement Lumeo Care+ coûte quatre euros par mois."),
    ("You can cancel your subscription at any time.", "Vous pouvez résilier votre abonnement à tout moment."),
    ("Your subscription will be renewed automatically every month.",
     "Votre abonnement sera renouvelé automatiquement chaque mois."),
    ("The subscription includes a free replacement every year.",
     "L'abonnement comprend un remplacement gratuit chaque année."),
    ("The NightOwl Sensor detects movement up to eight metres away.",
     "Le NightOwl Sensor détecte les mouvements jusqu'à huit mètres."),
    ("The GlowStrip S2 can be cut to the length you need.",
     "Le GlowStrip S2 peut être coupé à la longueur souhaitée."),
    ("The DimDial works without batteries.", "Le DimDial fonctionne sans piles."),
    ("The battery of the NightOwl Sensor lasts two years.", "La pile du NightOwl Sensor dure deux ans."),
    ("You can create schedules in the Lumeo Connect app.",
     "Vous pouvez créer des programmes dans l'application Lumeo Connect."),
    ("Your lights will turn on at sunset.", "Vos lumières s'allumeront au coucher du soleil."),
    ("The app needs access to your location.", "L'application a besoin d'accéder à votre position."),
    ("Your password must contain at least ten characters.",
     "Votre mot de passe doit contenir au moins dix caractères."),
    ("We have sent you a link to reset your password.",
     "Nous vous avons envoyé un lien pour réinitialiser votre mot de passe."),
    ("Your customer account has been deleted.", "Votre espace client a été supprimé."),
    ("You can add a second user to your customer account.",
     "Vous pouvez ajouter un deuxième utilisateur à votre espace client."),
    ("Your devices stay connected when the internet is down.",
     "Vos appareils restent connectés quand internet est coupé."),
    ("The Lumeo Hub must be connected to your router with a cable.",
     "Le Lumeo Hub doit être branché à votre routeur avec un câble."),
    ("The light of the Lumeo Hub blinks blue during the update.",
     "Le voyant du Lumeo Hub clignote en bleu pendant la mise à jour."),
    ("A red light means that the device is offline.", "Un voyant rouge signifie que l'appareil est hors ligne."),
    ("You can group several lights in one room.", "Vous pouvez regrouper plusieurs lumières dans une pièce."),
    ("The app sends you a notification when the battery is low.",
     "L'application vous envoie une notification quand la pile est faible."),
    ("Voice control works with the Lumeo Hub only.", "La commande vocale fonctionne uniquement avec le Lumeo Hub."),
    ("Your subscription ends on the last day of the month.",
     "Votre abonnement prend fin le dernier jour du mois."),
    ("The new firmware fixes the pairing problem.", "Le nouveau micrologiciel corrige le problème d'appairage."),
    ("You will receive an invoice for each month of subscription.",
     "Vous recevrez une facture pour chaque mois d'abonnement."),
    ("Please update the Lumeo Connect app before the pairing.",
     "Veuillez mettre à jour l'application Lumeo Connect avant l'appairage."),
    ("The Lumeo Spot Mini is not compatible with the DimDial.",
     "Le Lumeo Spot Mini n'est pas compatible avec le DimDial."),
    ("Reset the device by holding the button for ten seconds.",
     "Réinitialisez l'appareil en maintenant le bouton enfoncé pendant dix secondes."),
    ("Your lights can follow a wake-up routine in the morning.",
     "Vos lumières peuvent suivre une routine de réveil le matin."),
    ("The app shows the energy use of each light.",
     "L'application affiche la consommation d'énergie de chaque lumière."),
    ("Lumeo Care+ includes priority access to customer service.",
     "Lumeo Care+ comprend un accès prioritaire au service client."),
]

# Held out: written apart from the training pairs and the monolingual text; never in training.
HELDOUT: list[tuple[str, str]] = [
    ("Your GlowStrip S2 was delivered this morning.", "Votre GlowStrip S2 a été livré ce matin."),
    ("We have refunded your order.", "Nous avons remboursé votre commande."),
    ("Sorry, the NightOwl Sensor is sold out this week.", "Désolés, le NightOwl Sensor est épuisé cette semaine."),
    ("Please attach the return label to the box.", "Veuillez fixer l'étiquette de retour sur le carton."),
    ("Your tracking number is in the confirmation email.",
     "Votre numéro de suivi se trouve dans l'e-mail de confirmation."),
    ("The delivery of your parcel is delayed by two days.",
     "La livraison de votre colis est retardée de deux jours."),
    ("We cannot find your order in our system.", "Nous ne trouvons pas votre commande dans notre système."),
    ("Your DimDial is covered by the warranty.", "Votre DimDial est couvert par la garantie."),
    ("Send us the serial number of the Lumeo Hub.", "Envoyez-nous le numéro de série du Lumeo Hub."),
    ("A new invoice is available in your customer account.",
     "Une nouvelle facture est disponible dans votre espace client."),
    ("Our warehouse is closed on Sunday.", "Notre entrepôt est fermé le dimanche."),
    ("We will contact you about your support ticket tomorrow.",
     "Nous vous contacterons demain au sujet de votre ticket d'assistance."),
    ("The replacement was shipped yesterday.", "Le remplacement a été expédié hier."),
    ("Your voucher can be used on your next order.",
     "Votre bon d'achat peut être utilisé pour votre prochaine commande."),
    ("The refund will appear on your bank statement.", "Le remboursement apparaîtra sur votre relevé bancaire."),
    ("Thank you for your patience.", "Merci de votre patience."),
    ("The Lumeo Bulb E27 fits most lamps.", "Le Lumeo Bulb E27 s'adapte à la plupart des lampes."),
    ("Please contact customer service if the parcel is damaged.",
     "Veuillez contacter le service client si le colis est endommagé."),
    ("Your order was delivered to a neighbour.", "Votre commande a été livrée chez un voisin."),
    ("The warranty starts on the day of delivery.", "La garantie commence le jour de la livraison."),
    ("Install the firmware update before the pairing.",
     "Installez la mise à jour du micrologiciel avant l'appairage."),
    ("Your Lumeo Care+ subscription has been cancelled.", "Votre abonnement Lumeo Care+ a été résilié."),
    ("The pairing of the NightOwl Sensor failed.", "L'appairage du NightOwl Sensor a échoué."),
    ("You can turn off the automatic firmware update in the app.",
     "Vous pouvez désactiver la mise à jour automatique du micrologiciel dans l'application."),
    ("The Lumeo Connect app shows the battery level of each sensor.",
     "L'application Lumeo Connect affiche le niveau de pile de chaque capteur."),
    ("Your subscription includes an extended warranty.", "Votre abonnement comprend une garantie prolongée."),
    ("Enter your password to confirm the change.", "Saisissez votre mot de passe pour confirmer la modification."),
    ("The light of the DimDial blinks when the battery is low.",
     "Le voyant du DimDial clignote quand la pile est faible."),
    ("You can pause your subscription for one month.", "Vous pouvez suspendre votre abonnement pendant un mois."),
    ("The Lumeo Hub restarts after the firmware update.",
     "Le Lumeo Hub redémarre après la mise à jour du micrologiciel."),
    ("Your customer account is linked to the Lumeo Connect app.",
     "Votre espace client est lié à l'application Lumeo Connect."),
    ("Keep the device plugged in during the update.", "Laissez l'appareil branché pendant la mise à jour."),
    ("Your lights turn off automatically at midnight.", "Vos lumières s'éteignent automatiquement à minuit."),
    ("The NightOwl Sensor works outdoors too.", "Le NightOwl Sensor fonctionne aussi en extérieur."),
    ("We have extended your warranty by one year.", "Nous avons prolongé votre garantie d'un an."),
    ("Your monthly invoice is ready.", "Votre facture mensuelle est prête."),
]


COMBINED = 120  # two-sentence training pairs made from the single ones


def row(source: str, target: str, tag: bool, marker: str = TAG) -> dict:
    return {"messages": [{"role": "user", "content": f"{marker} {source}" if tag else source},
                         {"role": "assistant", "content": target}]}


def parallel_pairs() -> list[tuple[str, str]]:
    """Every training pair: each template with every product, the plain sentences, the glossary's terms."""
    pairs = [(en.format(p=p), fr.format(p=p)) for en, fr in TEMPLATES for p in PRODUCTS]
    pairs += SENTENCES
    pairs += [(en[:1].upper() + en[1:], fr[:1].upper() + fr[1:]) for en, fr in GLOSSARY]
    rng = random.Random(1)  # two-sentence messages, as a customer-service reply has
    singles = pairs[: len(pairs) - len(GLOSSARY)]
    pairs += [(f"{a[0]} {b[0]}", f"{a[1]} {b[1]}") for a, b in (rng.sample(singles, 2) for _ in range(COMBINED))]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--untagged", action="store_true", help="write untagged/ rows without the <2fr> tag")
    args = parser.parse_args()
    out = HERE / "untagged" if args.untagged else HERE
    out.mkdir(exist_ok=True)
    tag = not args.untagged
    pairs = parallel_pairs()
    random.Random(0).shuffle(pairs)
    with (out / "train.jsonl").open("w", encoding="utf-8") as f:
        for en, fr in pairs:
            f.write(json.dumps(row(en, fr, tag), ensure_ascii=False) + "\n")
    (out / "monolingual.fr.txt").write_text("".join(fr + "\n" for _, fr in MONOLINGUAL), encoding="utf-8")
    with (out / "heldout.jsonl").open("w", encoding="utf-8") as f:
        for en, fr in HELDOUT:
            f.write(json.dumps({"question": f"{TAG} {en}" if tag else en, "reference": fr},
                               ensure_ascii=False) + "\n")
    if tag:  # the reverse direction, FR → EN, for the model that back-translates (reverse.yaml)
        (HERE / "reverse").mkdir(exist_ok=True)
        with (HERE / "reverse" / "train.jsonl").open("w", encoding="utf-8") as f:
            for en, fr in pairs:
                f.write(json.dumps(row(fr, en, True, REVERSE_TAG), ensure_ascii=False) + "\n")
        with (HERE / "reverse" / "heldout.jsonl").open("w", encoding="utf-8") as f:
            for en, fr in HELDOUT:
                f.write(json.dumps({"question": f"{REVERSE_TAG} {fr}", "reference": en}, ensure_ascii=False) + "\n")
    print(f"{len(pairs)} training pairs, {len(MONOLINGUAL)} monolingual French lines, {len(HELDOUT)} held out "
          f"→ {out}")


if __name__ == "__main__":
    main()
