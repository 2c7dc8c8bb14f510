"""Provider adapters: webhook payloads of messaging and email providers as consentkit inputs.

One small module per provider, each a few pure functions: a payload (form fields, or the raw
body and its headers) in, :class:`~consentkit.inbound.InboundMessage` values out, ready for
:meth:`~consentkit.service.ConsentService.handle_inbound`; and, where the provider signs its
webhooks, a ``verify_signature`` that raises :class:`~consentkit.errors.SignatureError`.
Nothing here does I/O, reads a clock (pass ``now`` / ``received_at``) or keeps state.  Where the
provider classified the event itself (Twilio's ``OptOutType``, Telnyx's ``autoresponse_type``,
WhatsApp's ``user_preferences``, an email unsubscribe or complaint, a send failure meaning "this
recipient opted out"), the message carries that verdict; otherwise consentkit's matcher reads the
text.  A spam complaint carries :attr:`~consentkit.inbound.ProviderVerdict.COMPLAINT`: the
system's opt-out, which no keyword or provider opt-in undoes.  Malformed payloads raise
:class:`~consentkit.errors.PayloadError` naming the field.

The modules whose requests carry several events (:mod:`~consentkit.providers.sendgrid`,
:mod:`~consentkit.providers.whatsapp`, :mod:`~consentkit.providers.ses`,
:mod:`~consentkit.providers.telnyx`) also have ``parse_batch``, which returns a
:class:`ParsedBatch`: the messages it could read, and as :class:`RejectedEvent` values the events
it could not (each with its path and its PayloadError).  A webhook endpoint uses it, applies the
messages, logs the rejected events and answers success; their strict ``parse`` refuses the whole
request for one unreadable event, so the provider would retry it, and its valid opt-outs, forever.

=====================================  ===========================================  ============
module                                 maps                                         signature
=====================================  ===========================================  ============
:mod:`~consentkit.providers.twilio`    SMS/MMS/RCS/WhatsApp messages, 21610, TwiML  HMAC-SHA1
:mod:`~consentkit.providers.telnyx`    ``message.received``, 40300                  Ed25519 [#]_
:mod:`~consentkit.providers.vonage`    inbound SMS, receipts with err-code 9        MD5 / HMAC
:mod:`~consentkit.providers.aws`       End User Messaging two-way SMS (SNS)         host [#]_
:mod:`~consentkit.providers.sinch`     Conversation API messages, opt-outs          HMAC-SHA256
:mod:`~consentkit.providers.whatsapp`  Cloud API messages, preferences, 131050      HMAC-SHA256
:mod:`~consentkit.providers.sendgrid`  unsubscribes, spam reports                  host (ECDSA)
:mod:`~consentkit.providers.mailgun`   ``unsubscribed``, ``complained``             HMAC-SHA256
:mod:`~consentkit.providers.postmark`  ``SubscriptionChange``                       none (basic
                                                                                    auth)
:mod:`~consentkit.providers.ses`       complaints, list unsubscribes (SNS)          host
:mod:`~consentkit.providers.plivo`     status callbacks with error 200              host
=====================================  ===========================================  ============

.. [#] PyNaCl, the ``ed25519`` extra, imported only when a Telnyx signature is checked.
.. [#] "host": the provider signs, but checking needs a certificate fetch or a library
   consentkit does not depend on; the host checks it before parsing (see each module).

The modules are imported by name (``from consentkit.providers import twilio``); this package
imports none of them (only the :class:`ParsedBatch` and :class:`RejectedEvent` they share), so
importing one costs only that one.
"""

from consentkit.providers._common import ParsedBatch, RejectedEvent

__all__ = ["ParsedBatch", "RejectedEvent"]
