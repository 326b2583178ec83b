"""Where every public resource of the project lives, and the data sets main.py can train on.

Nothing here touches the network or the disk: utils.download and utils.fetch_images do, main.py and
save_vgg_feature.py decide when. None of these hosts was reachable while this was written (see README,
"Data and downloads"); the tests serve look-alike files from 127.0.0.1.
"""
import os
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------------------------
# Public locations

# the seed PyTorch implementation: the authors' Twitter-2015 text and the word vectors filtered to its vocabulary
SEED_REPO_RAW = "https://raw.githubusercontent.com/monologg/NER-Multimodal-pytorch/master"
TWITTER2015_URL = SEED_REPO_RAW + "/data/{file}"
WORD_VECTORS_FILE = "word_vector_200d.vec"
WORD_VECTORS_URL = SEED_REPO_RAW + "/wordvec/" + WORD_VECTORS_FILE

# VGG16 pool5 features of the 8,257 Twitter-2015 images, published with the seed implementation (int id -> (49, 512))
VGG_FEATURES_FILE = "img_vgg_features.pt"
VGG_FEATURES_GDRIVE_ID = "1q9CRm5gCuU9EVEA6Y4xYp6naskTL0bs4"
VGG_FEATURES_URL = "https://drive.google.com/uc?id=" + VGG_FEATURES_GDRIVE_ID

# ImageNet VGG16 weights (torchvision's file); the name carries the first 8 hex digits of the file's sha256
VGG16_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Keras' Caffe-converted VGG16 in Theano layout, what the authors' extractor loaded (save_vgg_feature.py --preprocess
# caffe/authors reads it; never downloaded automatically)
KERAS_VGG16_TH_WEIGHTS_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/v0.1/"
                              "vgg16_weights_th_dim_ordering_th_kernels_notop.h5")
VGG16_WEIGHTS_SHA256_PREFIX = "397923af"

# Twitter-2015 and Twitter-2017 as released with UMT (Yu et al., ACL 2020): CoNLL text in the repository, the
# images of both in one archive on Google Drive (IJCAI2019_data.zip, first released with TomBERT, IJCAI 2019).
UMT_REPO_RAW = "https://raw.githubusercontent.com/jefferyYu/UMT/master/data"
UMT_IMAGES_GDRIVE_ID = "1PpvvncnQkgDNeBMKVgG2zFYuRhbL873g"


@dataclass(frozen=True)
class ImageArchive:
    """A zip file holding image folders, `<folder>/<id>.jpg`, perhaps under one top-level folder."""
    file_name: str   # the archive's own name; it is kept under this name next to the extracted images
    url: str         # what utils.download fetches (a Google Drive `uc?id=` link is fine: gdown resolves it)
    page: str        # where a person finds it in a browser


UMT_IMAGES = ImageArchive(file_name="IJCAI2019_data.zip",
                          url="https://drive.google.com/uc?id=" + UMT_IMAGES_GDRIVE_ID,
                          page=f"https://drive.google.com/file/d/{UMT_IMAGES_GDRIVE_ID}/view")


# ----------------------------------------------------------------------------------------------------------------
# Data sets

@dataclass(frozen=True)
class Dataset:
    name: str
    split_files: tuple       # (train, dev, test) file names inside the data folder
    text_url: str            # URL of one split file, with `{file}` standing for its name
    img_dir: str             # image folder inside the data folder, images named <id>.jpg
    images: ImageArchive     # the archive the images come from
    archive_folder: str      # the folder inside `images` that holds this data set's images
    entity_types: tuple      # as written in the files' BIO tags
    feature_url: str | None = None  # a published VGG16 feature file (VGG_FEATURES_FILE), if there is one

    @property
    def data_dir(self):
        """The default data folder: ./data/<name>."""
        return os.path.join(".", "data", self.name)

    def file_url(self, file_name):
        """Where `file_name` of this data set can be downloaded from; None for a name that is not one of its splits."""
        return self.text_url.format(file=file_name) if file_name in self.split_files else None


DATASETS = {
    # the authors' release as the seed implementation ships it (files train/dev/test; 4,000 / 1,000 / 3,257 tweets);
    # its images are the folder twitter2015_images/ of UMT's archive (the same tweets and ids), kept as ner_img/
    "twitter2015": Dataset(name="twitter2015", split_files=("train", "dev", "test"), text_url=TWITTER2015_URL,
                           img_dir="ner_img", images=UMT_IMAGES, archive_folder="twitter2015_images",
                           entity_types=("PER", "LOC", "ORG", "OTHER"), feature_url=VGG_FEATURES_URL),
    # Twitter-2017 (Lu et al., ACL 2018) as released with UMT: 3,373 / 723 / 723 tweets, ids such as 17_06_12483
    "twitter2017": Dataset(name="twitter2017", split_files=("train.txt", "valid.txt", "test.txt"),
                           text_url=UMT_REPO_RAW + "/twitter2017/{file}", img_dir="twitter2017_images",
                           images=UMT_IMAGES, archive_folder="twitter2017_images",
                           entity_types=("PER", "LOC", "ORG", "MISC")),
    # the same Twitter-2015 tweets in UMT's copy (its files keep the tag OTHER; UMT's code renames it MISC on reading)
    "twitter2015-umt": Dataset(name="twitter2015-umt", split_files=("train.txt", "valid.txt", "test.txt"),
                               text_url=UMT_REPO_RAW + "/twitter2015/{file}", img_dir="twitter2015_images",
                               images=UMT_IMAGES, archive_folder="twitter2015_images",
                               entity_types=("PER", "LOC", "ORG", "OTHER")),
}
