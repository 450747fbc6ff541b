/*
 * pgproto.h -- PostgreSQL frontend/backend protocol 3.0 constants.
 * See https://www.postgresql.org/docs/15/protocol-message-formats.html
 */
#ifndef TG_PGPROTO_H
#define TG_PGPROTO_H

#include <stdint.h>

#define PG_PROTO_3_0            0x00030000u
#define PG_PROTO_MAJOR(v)       ((v) >> 16)
#define PG_PROTO_MINOR(v)       ((v) & 0xffffu)
#define PG_CANCEL_REQUEST_CODE  80877102u   /* 1234.5678 */
#define PG_SSL_REQUEST_CODE     80877103u   /* 1234.5679 */
#define PG_GSSENC_REQUEST_CODE  80877104u   /* 1234.5680 */

/* The startup packet has no type byte: int32 length, int32 code, ... */
#define PG_STARTUP_MAX_LEN      10000       /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */

/* Statement and portal names count up to NAMEDATALEN - 1 bytes: PostgreSQL's
 * hash tables of them compare no further. */
#define PG_NAME_MAX             63

/* Frontend (client -> server) message types. */
#define PG_FE_BIND          'B'
#define PG_FE_CLOSE         'C'
#define PG_FE_DESCRIBE      'D'
#define PG_FE_EXECUTE       'E'
#define PG_FE_FUNCTION_CALL 'F'
#define PG_FE_FLUSH         'H'
#define PG_FE_PARSE         'P'
#define PG_FE_QUERY         'Q'
#define PG_FE_SYNC          'S'
#define PG_FE_TERMINATE     'X'
#define PG_FE_COPY_FAIL     'f'
#define PG_FE_COPY_DONE     'c'
#define PG_FE_COPY_DATA     'd'
#define PG_FE_PASSWORD      'p'     /* also SASLInitialResponse, SASLResponse, GSSResponse */

/* Backend (server -> client) message types. */
#define PG_BE_AUTH              'R'
#define PG_BE_KEY_DATA          'K'
#define PG_BE_BIND_COMPLETE     '2'
#define PG_BE_CLOSE_COMPLETE    '3'
#define PG_BE_COMMAND_COMPLETE  'C'
#define PG_BE_COPY_IN           'G'
#define PG_BE_COPY_OUT          'H'
#define PG_BE_COPY_BOTH         'W'
#define PG_BE_COPY_DATA         'd'
#define PG_BE_COPY_DONE         'c'
#define PG_BE_DATA_ROW          'D'
#define PG_BE_EMPTY_QUERY       'I'
#define PG_BE_ERROR             'E'
#define PG_BE_FUNCTION_RESULT   'V'
#define PG_BE_NEGOTIATE_VERSION 'v'
#define PG_BE_NO_DATA           'n'
#define PG_BE_NOTICE            'N'
#define PG_BE_NOTIFICATION      'A'
#define PG_BE_PARAM_DESC        't'
#define PG_BE_PARAM_STATUS      'S'
#define PG_BE_PARSE_COMPLETE    '1'
#define PG_BE_PORTAL_SUSPENDED  's'
#define PG_BE_READY             'Z'
#define PG_BE_ROW_DESC          'T'

/* Authentication request codes (the int32 after 'R'). */
#define PG_AUTH_OK              0
#define PG_AUTH_KERBEROS_V5     2
#define PG_AUTH_CLEARTEXT       3
#define PG_AUTH_MD5             5
#define PG_AUTH_SCM_CREDS       6
#define PG_AUTH_GSS             7
#define PG_AUTH_GSS_CONTINUE    8
#define PG_AUTH_SSPI            9
#define PG_AUTH_SASL            10
#define PG_AUTH_SASL_CONTINUE   11
#define PG_AUTH_SASL_FINAL      12

/* ErrorResponse / NoticeResponse field codes. */
#define PG_EF_SEVERITY          'S'
#define PG_EF_SEVERITY_NONLOC   'V'
#define PG_EF_CODE              'C'
#define PG_EF_MESSAGE           'M'
#define PG_EF_DETAIL            'D'
#define PG_EF_HINT              'H'
#define PG_EF_POSITION          'P'
#define PG_EF_TABLE             't'
#define PG_EF_SCHEMA            's'
#define PG_EF_CONSTRAINT        'n'
#define PG_EF_CONTEXT           'W'
#define PG_EF_SOURCE_FILE       'F'
#define PG_EF_SOURCE_LINE       'L'
#define PG_EF_SOURCE_ROUTINE    'R'

#endif
