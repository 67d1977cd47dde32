"""The activation pages' words, in English and French."""

from __future__ import annotations

from bridge.web.passwords import MIN_LENGTH

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "activate_title": "Activate your account",
        "activate_intro": "Welcome, {name}. Choose a password to activate your {tenant} account.",
        "user_name": "User name",
        "password": "New password",
        "password_hint": f"At least {MIN_LENGTH} characters. A sentence of several words is easy to remember.",
        "password_confirm": "Repeat the password",
        "activate_button": "Activate my account",
        "confirm_title": "Confirm your address",
        "confirm_intro": "Welcome, {name}. Confirm your email address to finish opening your {tenant} account. "
        "You will then sign in through your organisation's login page.",
        "confirm_button": "Confirm my address",
        "expires": "This link expires on {date}.",
        "errors_title": "The password could not be set:",
        "mismatch": "The two passwords are different.",
        "too_short": f"The password is too short: use at least {MIN_LENGTH} characters.",
        "too_long": "The password is too long.",
        "blank": "The password cannot be only spaces.",
        "too_common": "This password is too easy to guess: it is a common password or follows a pattern "
        "(words, names, dates, keyboard rows, repeats). A sentence of several unrelated words works well.",
        "is_identity": "The password must not be your user name or your email address.",
        "done_title": "Your account is active",
        "done_text": "Your {tenant} account is active. You can now sign in with your user name and your new password.",
        "sign_in": "Sign in",
        "refused_expired_title": "This link has expired",
        "refused_expired_text": "Activation links are valid for a limited time.",
        "refused_used_title": "This link has already been used",
        "refused_used_text": "Each activation link works once. If your account is already active, sign in as usual.",
        "refused_replaced_title": "This link is no longer valid",
        "refused_replaced_text": "A newer link may have been sent to you: use the most recent email.",
        "refused_unknown_title": "This link is not valid",
        "refused_unknown_text": "Check that you copied the whole address from the email.",
        "new_link_title": "Get a new activation link",
        "new_link_intro": "Enter your email address. If an account is waiting for activation at this address, "
        "we will send it a new link.",
        "email": "Email address",
        "new_link_button": "Send me a new link",
        "new_link_sent_title": "Check your mailbox",
        "new_link_sent_text": "If an account is waiting for activation at this address, a new link is on its way. "
        "Earlier links no longer work.",
        "csrf_title": "This form has expired",
        "csrf_text": "Reload the page and try again.",
        "rate_title": "Too many attempts",
        "rate_text": "Please wait a few minutes before trying again.",
        "language": "Français",
    },
    "fr": {
        "activate_title": "Activez votre compte",
        "activate_intro": "Bienvenue, {name}. Choisissez un mot de passe pour activer votre compte {tenant}.",
        "user_name": "Identifiant",
        "password": "Nouveau mot de passe",
        "password_hint": f"Au moins {MIN_LENGTH} caractères. Une phrase de quelques mots se retient facilement.",
        "password_confirm": "Répétez le mot de passe",
        "activate_button": "Activer mon compte",
        "confirm_title": "Confirmez votre adresse",
        "confirm_intro": "Bienvenue, {name}. Confirmez votre adresse électronique pour finir d'ouvrir votre compte "
        "{tenant}. Vous vous connecterez ensuite par la page de connexion de votre organisation.",
        "confirm_button": "Confirmer mon adresse",
        "expires": "Ce lien expire le {date}.",
        "errors_title": "Le mot de passe n'a pas pu être enregistré :",
        "mismatch": "Les deux mots de passe sont différents.",
        "too_short": f"Le mot de passe est trop court : utilisez au moins {MIN_LENGTH} caractères.",
        "too_long": "Le mot de passe est trop long.",
        "blank": "Le mot de passe ne peut pas être fait que d'espaces.",
        "too_common": "Ce mot de passe est trop facile à deviner : c'est un mot de passe courant ou il suit un "
        "motif (mots, noms, dates, touches voisines, répétitions). Une phrase de plusieurs mots sans lien convient.",
        "is_identity": "Le mot de passe ne doit être ni votre identifiant ni votre adresse électronique.",
        "done_title": "Votre compte est actif",
        "done_text": "Votre compte {tenant} est actif. Vous pouvez maintenant vous connecter avec votre identifiant "
        "et votre nouveau mot de passe.",
        "sign_in": "Se connecter",
        "refused_expired_title": "Ce lien a expiré",
        "refused_expired_text": "Les liens d'activation sont valables pour une durée limitée.",
        "refused_used_title": "Ce lien a déjà servi",
        "refused_used_text": "Chaque lien d'activation ne fonctionne qu'une fois. Si votre compte est déjà actif, "
        "connectez-vous comme d'habitude.",
        "refused_replaced_title": "Ce lien n'est plus valable",
        "refused_replaced_text": "Un lien plus récent vous a peut-être été envoyé : utilisez le dernier message reçu.",
        "refused_unknown_title": "Ce lien n'est pas valable",
        "refused_unknown_text": "Vérifiez que vous avez copié l'adresse complète depuis le message.",
        "new_link_title": "Recevoir un nouveau lien d'activation",
        "new_link_intro": "Saisissez votre adresse électronique. Si un compte attend d'être activé à cette adresse, "
        "nous lui enverrons un nouveau lien.",
        "email": "Adresse électronique",
        "new_link_button": "M'envoyer un nouveau lien",
        "new_link_sent_title": "Consultez votre messagerie",
        "new_link_sent_text": "Si un compte attend d'être activé à cette adresse, un nouveau lien est en route. "
        "Les liens précédents ne fonctionnent plus.",
        "csrf_title": "Ce formulaire a expiré",
        "csrf_text": "Rechargez la page et réessayez.",
        "rate_title": "Trop de tentatives",
        "rate_text": "Merci de patienter quelques minutes avant de réessayer.",
        "language": "English",
    },
}
