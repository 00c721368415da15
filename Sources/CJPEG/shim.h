#include <stdio.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

/* In-memory JPEG decoding for MumuEncoder's image loader (Sources/MumuEncoder/Image/ImageLoader.swift).
   libjpeg's default error handler calls exit(); Swift cannot catch a longjmp either, so the setjmp lives
   here, in C: the error manager formats libjpeg's message into the caller's buffer and longjmps back to
   mumu_jpeg_decode, which frees what it allocated and returns non-zero. Warnings (corrupt-data warnings
   included, as PIL ignores them) are dropped.

   Decoding uses libjpeg's defaults, as PIL's decoder does: JDCT_ISLOW, fancy upsampling, no scaling;
   3-component files are converted to RGB by libjpeg (YCbCr or RGB as the file's markers say), 1-component
   files stay gray, 4-component files come out as CMYK (libjpeg turns YCCK into CMYK). */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *msg;
    size_t cap;
    int saw_eof; /* libjpeg's source manager hit the end of the data and inserted a fake EOI */
} mumu_jpeg_error_mgr;

static inline void mumu_jpeg_error_exit(j_common_ptr cinfo) {
    mumu_jpeg_error_mgr *e = (mumu_jpeg_error_mgr *)cinfo->err;
    if (e->msg != NULL && e->cap > 0) {
        char buf[JMSG_LENGTH_MAX];
        buf[0] = 0;
        (*cinfo->err->format_message)(cinfo, buf);
        snprintf(e->msg, e->cap, "%s", buf);
    }
    longjmp(e->jump, 1);
}

static inline void mumu_jpeg_output_message(j_common_ptr cinfo) { (void)cinfo; }
static inline void mumu_jpeg_emit_message(j_common_ptr cinfo, int level) {
    mumu_jpeg_error_mgr *e = (mumu_jpeg_error_mgr *)cinfo->err;
    if (level < 0) {
        e->pub.num_warnings++;
        if (e->pub.msg_code == JWRN_JPEG_EOF) e->saw_eof = 1;
    }
}

typedef struct {
    unsigned char *pixels; /* width * height * channels bytes, malloc'd */
    int width;
    int height;
    int channels;          /* 1 (gray), 3 (RGB) or 4 (CMYK as libjpeg gives it; Adobe files store it inverted) */
    int adobe;             /* an Adobe APP14 marker was present */
    unsigned char *exif;   /* the first APP1 "Exif\0\0" payload after the 6-byte header (malloc'd), or NULL */
    size_t exif_len;
} mumu_jpeg_image;

static inline void mumu_jpeg_image_free(mumu_jpeg_image *img) {
    if (img == NULL) return;
    free(img->pixels);
    free(img->exif);
    memset(img, 0, sizeof *img);
}

/* Decodes a JPEG held in memory. Returns 0 on success (release *out with mumu_jpeg_image_free), 2 when
   the data does not start with a JPEG SOI marker, 3 when the header's size exceeds max_side on a side or
   max_pixels in all (width/height still set, nothing decoded), 1 on any other error (message in err). */
static inline int mumu_jpeg_decode(const unsigned char *data, size_t len, long max_side, long long max_pixels,
                                   mumu_jpeg_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0) err[0] = 0;
    if (len < 3 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF) {
        if (err != NULL && errlen > 0) snprintf(err, errlen, "not a JPEG file (no SOI marker)");
        return 2;
    }
    if (len > (size_t)0xFFFFFFFFu) {
        if (err != NULL && errlen > 0) snprintf(err, errlen, "file too large");
        return 1;
    }
    struct jpeg_decompress_struct cinfo;
    mumu_jpeg_error_mgr jerr;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = mumu_jpeg_error_exit;
    jerr.pub.output_message = mumu_jpeg_output_message;
    jerr.pub.emit_message = mumu_jpeg_emit_message;
    jerr.msg = err;
    jerr.cap = errlen;
    jerr.saw_eof = 0;
    /* Assigned after setjmp, so volatile: their values must survive a longjmp. */
    unsigned char *volatile pixels = NULL;
    unsigned char *volatile exif = NULL;
    if (setjmp(jerr.jump)) {
        free((void *)pixels);
        free((void *)exif);
        jpeg_destroy_decompress(&cinfo);
        memset(out, 0, sizeof *out);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    out->width = (int)cinfo.image_width;
    out->height = (int)cinfo.image_height;
    if ((long)cinfo.image_width > max_side || (long)cinfo.image_height > max_side ||
        (long long)cinfo.image_width * (long long)cinfo.image_height > max_pixels) {
        jpeg_destroy_decompress(&cinfo);
        return 3;
    }
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != NULL; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
            size_t n = m->data_length - 6;
            unsigned char *e = (unsigned char *)malloc(n > 0 ? n : 1);
            if (e == NULL) {
                snprintf(err, errlen, "out of memory");
                jpeg_destroy_decompress(&cinfo);
                return 1;
            }
            if (n > 0) memcpy(e, m->data + 6, n);
            exif = e;
            out->exif_len = n;
            break;
        }
    }
    out->adobe = cinfo.saw_Adobe_marker ? 1 : 0;
    switch (cinfo.num_components) {
    case 1: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo.out_color_space = JCS_RGB; break;
    case 4: cinfo.out_color_space = JCS_CMYK; break;
    default:
        snprintf(err, errlen, "cannot handle a JPEG with %d components", cinfo.num_components);
        free((void *)exif);
        jpeg_destroy_decompress(&cinfo);
        memset(out, 0, sizeof *out);
        return 1;
    }
    jpeg_start_decompress(&cinfo);
    size_t w = cinfo.output_width, h = cinfo.output_height, c = (size_t)cinfo.output_components;
    pixels = (unsigned char *)malloc(w * h * c > 0 ? w * h * c : 1);
    if (pixels == NULL) {
        snprintf(err, errlen, "out of memory");
        longjmp(jerr.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.output_scanline * w * c);
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            snprintf(err, errlen, "file ends in the middle of the JPEG data (truncated?)");
            longjmp(jerr.jump, 1);
        }
    }
    jpeg_finish_decompress(&cinfo);
    /* A truncated file gets a warning and a fake EOI from jpeg_mem_src, and grey rows: an error here, as
       PIL raises "image file is truncated". */
    if (jerr.saw_eof) {
        snprintf(err, errlen, "file ends in the middle of the JPEG data (truncated?)");
        longjmp(jerr.jump, 1);
    }
    jpeg_destroy_decompress(&cinfo);
    out->pixels = (unsigned char *)pixels;
    out->exif = (unsigned char *)exif;
    out->width = (int)w;
    out->height = (int)h;
    out->channels = (int)c;
    return 0;
}
