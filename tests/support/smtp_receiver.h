/*
 * A small real SMTP server for tests, on 127.0.0.1 and a free port, one thread: it answers
 * 220/250/354/221 as a mail server does, records each message (envelope and data) and can
 * refuse the next RCPT TO with a given code (550: no such mailbox; 450: try later).
 *
 * Thread-safe getters return malloc'd copies the caller frees.
 */
#ifndef KX_SMTP_RECEIVER_H
#define KX_SMTP_RECEIVER_H

#include <stddef.h>

typedef struct kx_smtp_receiver kx_smtp_receiver;

int kx_smtp_receiver_start(kx_smtp_receiver **out);
void kx_smtp_receiver_stop(kx_smtp_receiver *r);
int kx_smtp_receiver_port(const kx_smtp_receiver *r);
/* The next n RCPT TO commands are answered with code instead of 250. */
void kx_smtp_receiver_refuse_next(kx_smtp_receiver *r, int code, unsigned n);
/* Messages received whole so far. */
size_t kx_smtp_receiver_count(kx_smtp_receiver *r);
/* The i-th message's MAIL FROM, RCPT TO (comma-joined) and data (without the final dot). */
char *kx_smtp_receiver_from(kx_smtp_receiver *r, size_t i);
char *kx_smtp_receiver_rcpt(kx_smtp_receiver *r, size_t i);
char *kx_smtp_receiver_data(kx_smtp_receiver *r, size_t i);

#endif
